"""Params for tests: the real conf (the committed params.yaml, composed from conf/) with overrides,
validated by the schema like any params. Hand-written dicts drift from conf/; these cannot."""

from __future__ import annotations

import copy
import functools
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from reviewpipe.config import compose_params, load_params
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


@functools.cache
def _composed(overrides: tuple[str, ...]) -> dict[str, Any]:
    if not overrides:  # the committed params.yaml is conf/ composed (tests/test_config.py checks it)
        return OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "params.yaml"))  # type: ignore[return-value]
    with tempfile.TemporaryDirectory() as tmp:
        compose_params(REPO_ROOT / "conf", Path(tmp) / "params.yaml", list(overrides))
        return OmegaConf.to_container(OmegaConf.load(Path(tmp) / "params.yaml"))  # type: ignore[return-value]


def conf_section(name: str, option: str | None = None) -> DictConfig:
    """One params section as conf/ composes it (its group set to `option`, e.g. deploy=sagemaker), with the
    interpolations (paths.*, other sections) resolved; a fresh copy each call, free to modify."""
    return OmegaConf.create(copy.deepcopy(_composed((f"{name}={option}",) if option else ())[name]))
