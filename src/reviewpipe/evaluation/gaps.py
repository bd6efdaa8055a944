"""Error-rate gaps between each group and the rest of the rows, with seeded bootstrap intervals.

What a fairness gate should measure: how much worse the model does on a group than on everyone
else, not how the groups' base rates differ. Each sensitive feature's value (Clarify's facet d)
is compared with all other rows (facet a), and every gap is a difference of two means of a
per-row value, rest minus group (positive: the group fares worse):

    accuracy           value = 1[predicted == observed]                   over all rows
    recall_<class>     value = 1[predicted == observed]                   over rows observed as <class>
    dppl_vs_dpl_<c>    value = 1[predicted == c] - 1[observed == c]       over all rows
                       (rest minus group = Clarify's DPPL minus the observed DPL: the disparity
                       in predicted proportions the model adds beyond the base rates)

A perfect classifier has every gap 0 whatever the base rates. Intervals: scipy's bootstrap, the
group and the rest resampled independently (BCa, seeded); a group with fewer than `min_support`
rows (rows of the class, for recall) is excluded and listed. Each gap is its own test: with a
non-zero threshold a pure-noise gap has to clear threshold + ~2 standard errors to count.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from reviewpipe import SENTIMENTS
from reviewpipe.errors import ReviewpipeError
from reviewpipe.evaluation.metrics import CLASS_NAMES

GAP_KINDS = ("accuracy", "recall", "dppl_vs_dpl")
MISSING_GROUP = "(missing)"


@dataclass(frozen=True)
class Gap:
    """One group against the rest on one gap measure."""

    feature: str
    group: str
    measure: str  # accuracy | recall_<class> | dppl_vs_dpl_<class>
    gap: float  # rest minus group
    low: float
    high: float
    group_rows: int  # rows the measure uses (rows of the class, for recall)
    rest_rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Excluded:
    """A group too small to measure: listed, not gated on."""

    feature: str
    group: str
    measure: str
    group_rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def difference_interval(
    rest: np.ndarray, group: np.ndarray, resamples: int, confidence: float, seed: int
) -> tuple[float, float, float]:
    """mean(rest) - mean(group) and its bootstrap interval (each sample resampled on its own, BCa;
    percentile where BCa is undefined, e.g. when one sample is constant)."""
    gap = float(rest.mean() - group.mean())
    if np.ptp(np.concatenate([rest, group])) == 0:
        return gap, gap, gap  # every value equal: no sampling variation to speak of
    low, high = _interval(rest, group, resamples, confidence, seed, "BCa")
    if np.isnan(low) or np.isnan(high):
        low, high = _interval(rest, group, resamples, confidence, seed, "percentile")
    return gap, low, high


def _interval(
    rest: np.ndarray, group: np.ndarray, resamples: int, confidence: float, seed: int, method: str
) -> tuple[float, float]:
    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa warns on near-degenerate samples; the caller checks NaN
        result = bootstrap(
            (rest, group),
            lambda a, b, axis=-1: a.mean(axis=axis) - b.mean(axis=axis),
            vectorized=True,
            n_resamples=resamples,
            confidence_level=confidence,
            method=method,
            rng=np.random.default_rng(seed),
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _measures(
    truth: np.ndarray, predicted: np.ndarray, kinds: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{measure: (per-row value, rows it applies to)} for the requested gap kinds."""
    unknown = [k for k in kinds if k not in GAP_KINDS]
    if unknown:
        raise ReviewpipeError(
            f"register.fairness.gaps has unknown kinds {unknown}; choose from {list(GAP_KINDS)}."
        )
    correct = (truth == predicted).astype(float)
    everyone = np.ones(len(truth), dtype=bool)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if "accuracy" in kinds:
        out["accuracy"] = (correct, everyone)
    for i, s in enumerate(SENTIMENTS):
        name = CLASS_NAMES[s]
        if "recall" in kinds:
            out[f"recall_{name}"] = (correct, truth == i)
        if "dppl_vs_dpl" in kinds:
            out[f"dppl_vs_dpl_{name}"] = (
                (predicted == i).astype(float) - (truth == i).astype(float),
                everyone,
            )
    return out


def group_gaps(
    truth: ArrayLike,
    predicted: ArrayLike,
    groups: pd.DataFrame,
    kinds: Sequence[str],
    min_support: int,
    resamples: int,
    confidence: float,
    seed: int,
) -> tuple[list[Gap], list[Excluded]]:
    """Every (feature, group, measure) gap with its interval, and the groups too small to measure.

    `truth`/`predicted` are class ids (0, 1, 2); `groups` has one column per sensitive feature.
    """
    y, yhat = np.asarray(truth, dtype=int), np.asarray(predicted, dtype=int)
    if not (len(y) == len(yhat) == len(groups)):
        raise ReviewpipeError(
            f"truth, predictions and groups differ in length: {len(y)}, {len(yhat)}, {len(groups)}."
        )
    measures = _measures(y, yhat, kinds)
    gaps: list[Gap] = []
    excluded: list[Excluded] = []
    for feature in groups.columns:
        values = groups[feature].astype("object").where(groups[feature].notna(), MISSING_GROUP).astype(str)
        for group in sorted(values.unique()):
            member = (values == group).to_numpy()
            for measure, (value, applies) in measures.items():
                inside, outside = value[member & applies], value[~member & applies]
                if len(inside) < min_support or len(outside) < min_support:
                    excluded.append(Excluded(feature, group, measure, int(len(inside))))
                    continue
                seed_here = seed + len(gaps) + len(excluded)  # fixed by position: reruns are identical
                gap, low, high = difference_interval(outside, inside, resamples, confidence, seed_here)
                gaps.append(Gap(feature, group, measure, gap, low, high, int(len(inside)), int(len(outside))))
    return gaps, excluded
