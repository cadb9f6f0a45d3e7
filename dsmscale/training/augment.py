"""Training augmentation that keeps the missing wedge where it is: 180° rotations about z, y, x.

They keep the wedge of a tilt range symmetric about 0 (±θ, as in datasets A and B); the
rotations about z and x turn an asymmetric range (−50°/+70°) into its mirror (−70°/+50°).
"""

from __future__ import annotations

import numpy as np
import torch

#: The 180° rotations of a (z, y, x) box that map the missing wedge of a tilt series about y onto
#: itself and keep the hand: identity, about z, about y, about x — given as the axes each flips.
WEDGE_ROTATIONS: tuple[tuple[int, ...], ...] = ((), (-2, -1), (-3, -1), (-3, -2))


def rotate_boxes_180(x: torch.Tensor, target: dict[str, torch.Tensor], choice: np.ndarray
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Box ``i`` and its mask and density rotated by ``WEDGE_ROTATIONS[choice[i]]`` (the last
    three axes of every tensor are z, y, x; labels are unchanged). The wedge stays where the
    simulator and real single-axis tilt series put it."""
    if len(choice) != len(x) or np.any((choice < 0) | (choice >= len(WEDGE_ROTATIONS))):
        raise ValueError(f"choice must hold {len(x)} values in 0..{len(WEDGE_ROTATIONS) - 1}")
    x, target = x.clone(), {k: v.clone() for k, v in target.items()}
    for r, axes in enumerate(WEDGE_ROTATIONS):
        picked = torch.from_numpy(np.flatnonzero(choice == r))
        if axes and len(picked):
            x[picked] = x[picked].flip(axes)
            for k in ("mask", "density"):
                target[k][picked] = target[k][picked].flip(axes)
    return x, target
