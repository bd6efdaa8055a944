"""A stacked ensemble: a small multinomial logistic regression over the member models' probabilities.

Members (baseline, automl, bert) are trained on the train split; the stacker learns how far to trust
each of them from their probabilities on the natural-mix validation rows. Those rows also score
the stacker, so it is cross-fitted: every validation row's ensemble probability comes from a
stacker fitted on the other folds (out-of-fold), and only the final stacker, fitted on all of them,
scores test and production. Test rows never reach it.

The stacker is class-weighted (n / (3 n_c)), like the members, so its probabilities describe
balanced classes too and one calibration step (evaluation.calibration) maps every candidate to
production priors. It is stored as plain numbers (stacker.json), so a package's inference.py
applies it with numpy alone:  p = softmax(W · [log p_m for m in members] + b).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from reviewpipe.errors import ReviewpipeError

STACKER_FILE = "stacker.json"
OOF_FILE = "validation_oof.parquet"
OOF_COLUMNS = ("ensemble_p_negative", "ensemble_p_neutral", "ensemble_p_positive")  # class order -1, 0, 1
EPS = 1e-6  # probabilities are clipped here before the log: one overconfident member cannot dominate


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def stratified_folds(truth: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold id per row, classes spread evenly across folds (seeded)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(truth), dtype=int)
    for c in np.unique(truth):
        rows = np.flatnonzero(truth == c)
        fold[rng.permutation(rows)] = np.arange(len(rows)) % folds
    return fold


def stack_features(member_proba: Mapping[str, ArrayLike], members: Sequence[str]) -> np.ndarray:
    """(n, 3 x members): each member's log-probabilities, in `members` order."""
    missing = [m for m in members if m not in member_proba]
    if missing:
        raise ReviewpipeError(f"the ensemble needs probabilities of {missing}; score those models first.")
    columns = [np.log(np.clip(np.asarray(member_proba[m], dtype=np.float64), EPS, 1.0)) for m in members]
    sizes = {c.shape for c in columns}
    if len(sizes) != 1 or columns[0].ndim != 2 or columns[0].shape[1] != 3:
        raise ReviewpipeError(f"member probabilities must all be (n, 3); got {sorted(sizes)}.")
    return np.hstack(columns)


@dataclass(frozen=True)
class Stacker:
    """softmax(coef · features + intercept) over the members' log-probabilities."""

    members: tuple[str, ...]
    coef: np.ndarray  # (3, 3 x members)
    intercept: np.ndarray  # (3,)
    C: float

    def predict_proba(self, member_proba: Mapping[str, ArrayLike]) -> np.ndarray:
        x = stack_features(member_proba, self.members)
        return softmax(x @ self.coef.T + self.intercept)

    def to_json(self) -> dict[str, Any]:
        return {
            "members": list(self.members),
            "coef": self.coef.round(8).tolist(),
            "intercept": self.intercept.round(8).tolist(),
            "C": self.C,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stacker:
        return cls(
            tuple(data["members"]),
            np.asarray(data["coef"], dtype=np.float64),
            np.asarray(data["intercept"], dtype=np.float64),
            float(data["C"]),
        )


def balanced_weights(truth: np.ndarray) -> np.ndarray:
    """n / (3 n_c) per row: every class carries the same total weight."""
    counts = np.bincount(truth, minlength=3).astype(np.float64)
    if (counts == 0).any():
        raise ReviewpipeError(
            f"the stacker needs every class among its rows; class counts {counts.tolist()}."
        )
    return (len(truth) / (3 * counts))[truth]


def fit_stacker(
    member_proba: Mapping[str, ArrayLike], truth: ArrayLike, members: Sequence[str], C: float = 1.0
) -> Stacker:
    """A class-weighted multinomial logistic regression (scikit-learn, L2 strength 1/C) on the rows."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(truth, dtype=int)
    x = stack_features(member_proba, members)
    model = LogisticRegression(C=C, max_iter=2000)
    model.fit(x, y, sample_weight=balanced_weights(y))
    if list(model.classes_) != [0, 1, 2]:
        raise ReviewpipeError(f"the stacker saw classes {list(model.classes_)}; it needs 0, 1 and 2.")
    return Stacker(tuple(members), model.coef_.copy(), model.intercept_.copy(), float(C))


def cross_fit(
    member_proba: Mapping[str, ArrayLike],
    truth: ArrayLike,
    members: Sequence[str],
    *,
    C: float = 1.0,
    folds: int = 5,
    seed: int = 0,
    fold: np.ndarray | None = None,
) -> np.ndarray:
    """Out-of-fold ensemble probabilities: each row scored by a stacker that never saw it."""
    y = np.asarray(truth, dtype=int)
    fold = stratified_folds(y, folds, seed) if fold is None else np.asarray(fold)
    out = np.empty((len(y), 3), dtype=np.float64)
    for k in np.unique(fold):
        held = fold == k
        train = {m: np.asarray(member_proba[m])[~held] for m in members}
        stacker = fit_stacker(train, y[~held], members, C)
        out[held] = stacker.predict_proba({m: np.asarray(member_proba[m])[held] for m in members})
    return out
