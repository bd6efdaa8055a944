"""Params for tests: the real conf (the committed params.yaml, composed from conf/) with overrides,
validated by the schema like any params. Hand-written dicts drift from conf/; these cannot."""

from __future__ import annotations

from omegaconf import DictConfig

from reviewpipe.config import load_params
from tests.conftest import REPO_ROOT


def real_params(*overrides: str) -> DictConfig:
    """params.yaml with `overrides` (dotted, as for `-S`: `explain.top_k=5`, `explain.models=[bert]`)."""
    return load_params(REPO_ROOT / "params.yaml", list(overrides))
