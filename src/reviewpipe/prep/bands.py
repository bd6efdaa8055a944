"""Age bands shared by explore, bias and evaluation (edges from `data.age_bands`, right-open)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def band_labels(edges: Sequence[int]) -> list[str]:
    """[0, 25, 35] -> ["<25", "25-34"]; the last band is open-ended ("65+")."""
    labels = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        if i == 0 and lo <= 0:
            labels.append(f"<{hi}")
        elif i == len(edges) - 2:
            labels.append(f"{lo}+")
        else:
            labels.append(f"{lo}-{hi - 1}")
    return labels


def age_band(ages: pd.Series, edges: Sequence[int]) -> pd.Series:
    """Band label per age (string); ages outside the edges get <NA>."""
    cut = pd.cut(ages, bins=list(edges), right=False, labels=band_labels(edges))
    return cut.astype("string")
