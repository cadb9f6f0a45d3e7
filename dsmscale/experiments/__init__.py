"""Experiments that compose the stages: the paper reproduction and its statistics."""
