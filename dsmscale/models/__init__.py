"""Networks: DSM-Net (switchable heads), the SSN3D-ED and DSRF3D-v2 baselines, compact students."""

from dsmscale.models.baselines import SSN3DED, DSRF3Dv2
from dsmscale.models.dsmnet import DSMNet, Heads
from dsmscale.models.students import GUO_WIDTHS, GuoStudent, small_dsmnet

__all__ = ["DSMNet", "GuoStudent", "Heads", "SSN3DED", "DSRF3Dv2", "build_model", "MODEL_NAMES"]

MODEL_NAMES = ("dsmnet", "cls", "seg", "cls_rec", "cls_seg", "ssn3d_ed", "dsrf3d_v2",
               "dsmnet_small", *GUO_WIDTHS)


def build_model(name: str, n_classes: int, batch_norm: bool = True):
    """A model by its table name: DSM-Net and its ablations share one class (heads switched).
    ``batch_norm=False`` drops the batch normalisation after every 3³ conv/deconv (the papers'
    plain reading)."""
    heads = {"dsmnet": ("cls", "seg", "rec"), "cls": ("cls",), "seg": ("seg",),
             "cls_rec": ("cls", "rec"), "cls_seg": ("cls", "seg")}
    if name in heads:
        return DSMNet(n_classes, heads=heads[name], batch_norm=batch_norm)
    if name == "ssn3d_ed":
        return SSN3DED(batch_norm)
    if name == "dsrf3d_v2":
        return DSRF3Dv2(n_classes, batch_norm=batch_norm)
    if name == "dsmnet_small":
        return small_dsmnet(n_classes, batch_norm)
    if name in GUO_WIDTHS:
        return GuoStudent(n_classes, GUO_WIDTHS[name], batch_norm=batch_norm)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
