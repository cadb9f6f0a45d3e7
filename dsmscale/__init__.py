"""dsmscale: DSM-Net at proteome scale."""
