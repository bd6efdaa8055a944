"""Score every candidate model on every named evaluation set through one prediction path.

An evaluation set is a name and prepared rows (e.g. `validation`, `test`; later natural-mix or
human-labelled test rows) with a role: `select` sets may choose and gate the champion, `report`
sets are only reported. Every model is scored on every set by `models.predictors` (the same code
`explain` and batch prediction use), so validation and test numbers are comparable by construction.
Report sections (metrics, fairness, bias, calibration, ...) are pure functions over the `Scores`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reviewpipe import SENTIMENTS
from reviewpipe.errors import ReviewpipeError
from reviewpipe.models.predictors import Predictor, load_predictor

ROLES = ("select", "report")
PREDICTED = "predicted_sentiment"
PREDICTED_ID = "predicted_label_id"


@dataclass(frozen=True)
class EvaluationSet:
    """Named prepared rows (`review_body`, `label_id`, optional `product_category`) and their role."""

    name: str
    frame: pd.DataFrame
    role: str = "report"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ReviewpipeError(
                f"evaluation set {self.name!r}: role must be one of {ROLES}, not {self.role!r} "
                "(evaluate.sets.<name>.role)."
            )

    @property
    def texts(self) -> list[str]:
        return self.frame["review_body"].fillna("").astype(str).tolist()

    @property
    def categories(self) -> list[str] | None:
        if "product_category" not in self.frame:
            return None
        return self.frame["product_category"].astype(str).tolist()

    @property
    def truth(self) -> np.ndarray:
        return self.frame["label_id"].to_numpy(dtype=int)


@dataclass
class Scores:
    """Probabilities (n, 3) in class order -1, 0, 1 for each model on each set: proba[model][set]."""

    sets: dict[str, EvaluationSet]
    proba: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        return list(self.proba)

    def predicted_ids(self, model: str, set_name: str) -> np.ndarray:
        return self.proba[model][set_name].argmax(axis=1)

    def scored(self, model: str, set_name: str) -> pd.DataFrame:
        """The set's rows with the model's predicted class id and sentiment beside the truth."""
        ids = self.predicted_ids(model, set_name)
        return self.sets[set_name].frame.assign(**{PREDICTED_ID: ids, PREDICTED: np.asarray(SENTIMENTS)[ids]})


def predict_in_batches(
    predictor: Predictor, texts: Sequence[str], categories: Sequence[str] | None, batch_size: int
) -> np.ndarray:
    """predict_proba over `texts` in chunks of `batch_size` (bounded memory for BERT)."""
    parts = [
        predictor.predict_proba(
            list(texts[i : i + batch_size]),
            None if categories is None else list(categories[i : i + batch_size]),
        )
        for i in range(0, len(texts), batch_size)
    ]
    return np.vstack(parts) if parts else np.zeros((0, len(SENTIMENTS)))


def score_models(
    models: Mapping[str, str],
    sets: Sequence[EvaluationSet],
    batch_size: int,
    load: Callable[[str, str], Predictor] = load_predictor,
) -> Scores:
    """Load each model once (kind = its name, as in `evaluate.models`) and score every set with it."""
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ReviewpipeError(f"evaluation set names must be unique, got {names}.")
    scores = Scores(sets={s.name: s for s in sets})
    for model, path in models.items():
        predictor = load(model, path)
        scores.proba[model] = {
            s.name: predict_in_batches(predictor, s.texts, s.categories, batch_size) for s in sets
        }
        del predictor  # one model in memory at a time
    return scores
