"""One predictor interface over the three model kinds (baseline, automl, bert).

`load_predictor(kind, path).predict_proba(texts, categories=None)` -> (n, 3) probabilities in
class order -1, 0, 1 (`reviewpipe.SENTIMENTS`). Each kind's library is imported only when that
kind is loaded, so serving the baseline never imports torch or AutoGluon.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from reviewpipe import SENTIMENTS, storage
from reviewpipe.errors import ReviewpipeError


class Predictor(Protocol):
    kind: str

    def predict_proba(self, texts: Sequence[str], categories: Sequence[str] | None = None) -> np.ndarray: ...


def _texts(texts: Sequence[Any]) -> list[str]:
    return ["" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t) for t in texts]


class BaselinePredictor:
    """The TF-IDF pipeline (one joblib file); product categories are not used."""

    kind = "baseline"

    def __init__(self, path: str | Path) -> None:
        from reviewpipe.models.baseline import load_model

        self.path = Path(path)
        self.model = load_model(str(path))

    def predict_proba(self, texts: Sequence[str], categories: Sequence[str] | None = None) -> np.ndarray:
        from reviewpipe.models.baseline import predict_proba

        return predict_proba(self.model, _texts(texts))


class AutoMLPredictor:
    """An AutoGluon TabularPredictor directory; the best model (or the ensemble) predicts."""

    kind = "automl"

    def __init__(self, path: str | Path) -> None:
        from reviewpipe.models.automl import load_automl

        self.path = Path(path)
        self.predictor = load_automl(str(path))

    def predict_proba(self, texts: Sequence[str], categories: Sequence[str] | None = None) -> np.ndarray:
        from reviewpipe.models.automl import predict_proba

        return predict_proba(self.predictor, _texts(texts), None if categories is None else list(categories))


class BertAdapter:
    """`reviewpipe.models.bert.predict.BertPredictor` behind the common interface."""

    kind = "bert"

    def __init__(self, path: str | Path) -> None:
        from reviewpipe.models.bert.predict import BertPredictor

        self.path = Path(path)
        self.bert = BertPredictor(path)
        self.tokenizer = self.bert.tokenizer  # the SHAP Text masker splits text with it

    def predict_proba(self, texts: Sequence[str], categories: Sequence[str] | None = None) -> np.ndarray:
        return np.asarray(self.bert.predict_proba(_texts(texts)), dtype=np.float64)


class EnsemblePredictor:
    """The stacked ensemble (`models/ensemble.py`): its members' probabilities, stacked.

    `combine(member_proba)` stacks probabilities already computed (evaluate scores the members
    anyway); `predict_proba` loads the members (paths in stacker.json) and scores them itself."""

    kind = "ensemble"

    def __init__(self, path: str | Path) -> None:
        from reviewpipe.models.ensemble import STACKER_FILE, Stacker

        self.path = Path(path)
        spec = storage.read_json(str(self.path / STACKER_FILE))
        self.stacker = Stacker.from_json(spec["stacker"])
        self.member_paths: dict[str, str] = dict(spec["member_paths"])
        self._members: dict[str, Predictor] = {}
        self._oof: dict[Any, np.ndarray] | None = None

    @property
    def members(self) -> tuple[str, ...]:
        return self.stacker.members

    def combine(self, member_proba: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.stacker.predict_proba(member_proba)

    def out_of_fold(self) -> dict[Any, np.ndarray]:
        """{review_id: ensemble probabilities} for the rows the stacker was fitted on (cross-fitted)."""
        if self._oof is None:
            import pandas as pd

            from reviewpipe.models.ensemble import OOF_COLUMNS, OOF_FILE

            uri = str(self.path / OOF_FILE)
            fs, local = storage.get_fs(uri)
            with fs.open(local, "rb") as f:
                table = pd.read_parquet(f)
            self._oof = dict(zip(table["review_id"], table[list(OOF_COLUMNS)].to_numpy(), strict=True))
        return self._oof

    def proba_for(self, review_ids: Sequence[Any], member_proba: Mapping[str, np.ndarray]) -> np.ndarray:
        """Ensemble probabilities of these rows from their members' probabilities: out-of-fold for a row
        the stacker was fitted on (so no row is scored by a stacker that saw its label), else stacked."""
        out = self.combine(member_proba)
        oof = self.out_of_fold()
        for i, review_id in enumerate(review_ids):
            if review_id in oof:
                out[i] = oof[review_id]
        return out

    def predict_proba(self, texts: Sequence[str], categories: Sequence[str] | None = None) -> np.ndarray:
        for name in self.members:
            if name not in self._members:
                self._members[name] = load_predictor(name, self.member_paths[name])
        return self.combine({m: self._members[m].predict_proba(texts, categories) for m in self.members})


LOADERS: dict[str, Callable[[str | Path], Predictor]] = {
    "baseline": BaselinePredictor,
    "automl": AutoMLPredictor,
    "bert": BertAdapter,
    "ensemble": EnsemblePredictor,
}


def load_predictor(kind: str, path: str | Path) -> Predictor:
    """The model at `path` behind `predict_proba(texts, categories=None) -> (n, 3)`."""
    if kind not in LOADERS:
        raise ReviewpipeError(f"unknown model kind {kind!r}; expected one of {sorted(LOADERS)}.")
    if not Path(path).exists():
        raise ReviewpipeError(
            f"no {kind} model at {path}; train it with `dvc repro {kind}` "
            f"(or `reviewpipe stage {kind}`) or fix the configured path."
        )
    return LOADERS[kind](path)


def predict_labels(
    predictor: Predictor, texts: Sequence[str], categories: Sequence[str] | None = None
) -> np.ndarray:
    """Sentiment labels (-1/0/1) with the highest probability."""
    return np.asarray(SENTIMENTS)[predictor.predict_proba(texts, categories).argmax(axis=1)]


def configured_models(cfg: Mapping[str, Any], section_name: str = "evaluate") -> dict[str, str]:
    """{model: path} for the models listed in `<section>.models`, each with a path that exists."""
    models = list(cfg.get("models") or [])
    paths = dict(cfg.get("model_paths") or {})
    if not models:
        raise ReviewpipeError(f"{section_name}.models is empty; list at least one of {sorted(paths)}.")
    unknown = [m for m in models if m not in paths]
    if unknown:
        raise ReviewpipeError(
            f"{section_name}.models lists {unknown} without a path in "
            f"{section_name}.model_paths ({sorted(paths)})."
        )
    for name in models:
        storage.require_exists(
            paths[name],
            f"the {name} model",
            f"Train it with `dvc repro {name}`, or drop {name!r} from {section_name}.models.",
        )
    return {name: str(paths[name]) for name in models}
