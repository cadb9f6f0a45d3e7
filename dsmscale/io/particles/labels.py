"""Class labels in particle tables: which column holds them on reading, and the numbers and names
they are written back as.

Read (first found): the column the user names (``class_column``); a name column
(``rlnClassName``, ``rlnParticleName`` as in large annotation sets); RELION's ``rlnClassNumber``
(kept as the text of the number). Written: ``rlnClassNumber`` plus ``rlnParticleName`` on every row,
so the mapping is stated row by row: names that are whole numbers keep their number, other names
are numbered 1, 2, … in sorted order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dsmscale.errors import InputError

#: Columns read as class labels when the user names none, in order of preference.
CLASS_COLUMNS = ("rlnClassName", "rlnParticleName", "rlnClassNumber")


def class_labels(df: pd.DataFrame, class_column: str | None, source) -> np.ndarray | None:
    """Each row's class label as text, or None when the table has none; ``class_column`` must
    exist when given."""
    if class_column is not None and class_column not in df.columns:
        raise InputError(source, f"has no class column {class_column!r} "
                                 f"(columns: {', '.join(map(str, df.columns[:12]))})")
    column = class_column or next((c for c in CLASS_COLUMNS if c in df.columns), None)
    if column is None:
        return None
    labels = df[column]
    if pd.api.types.is_float_dtype(labels) and (labels.dropna() % 1 == 0).all():
        labels = labels.astype("Int64")  # 3.0 → "3", as RELION writes integers
    return labels.astype(str).to_numpy()


def class_numbers(names: pd.Series) -> np.ndarray:
    """RELION class numbers for class names: a name that is a whole number ≥ 1 keeps it when all
    are; otherwise 1, 2, … in sorted name order."""
    names = names.astype(str)
    if names.str.fullmatch(r"[1-9]\d*").all():
        return names.astype(np.int64).to_numpy()
    order = {name: i + 1 for i, name in enumerate(sorted(names.unique()))}
    return names.map(order).to_numpy(np.int64)
