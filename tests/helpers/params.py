"""Params for tests: the real conf (the committed params.yaml, composed from conf/) with overrides,
validated by the schema like any params. Hand-written dicts drift from conf/; these cannot."""

from __future__ import annotations

from omegaconf import DictConfig

from reviewpipe.config import load_params
from reviewpipe.schema import BaselineParams
from tests.conftest import REPO_ROOT


def real_params(*overrides: str) -> DictConfig:
    """params.yaml with `overrides` (dotted, as for `-S`: `explain.top_k=5`, `explain.models=[bert]`)."""
    return load_params(REPO_ROOT / "params.yaml", list(overrides))


def baseline_settings(*overrides: str) -> BaselineParams:
    """The `baseline` section, typed, with overrides relative to it (`word.min_df=1`, `char.enabled=false`)."""
    return BaselineParams.from_params(real_params(*(f"baseline.{o}" for o in overrides)))


# A small-vocabulary TF-IDF for tiny synthetic splits: every n-gram counts (min_df 1), C = 1.
TINY_BASELINE = ("word.min_df=1", "char.ngram_range=[2,4]", "char.min_df=1", "classifier.C=1.0")
WORD_ONLY_BASELINE = ("word.min_df=1", "char.enabled=false", "classifier.C=1.0")
