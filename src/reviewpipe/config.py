"""params.yaml (composed by DVC from conf/) -> OmegaConf config, one section per stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from reviewpipe.errors import ReviewpipeError

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: list[str] | None = None) -> DictConfig:
    """Load params.yaml; `overrides` are dotlist strings such as `lake.uri=s3://b/p`."""
    path = Path(path)
    if not path.exists():
        raise ReviewpipeError(
            f"{path} not found. Run from the repository root, or compose it with `dvc exp run` "
            "(conf/ is composed into params.yaml)."
        )
    cfg = OmegaConf.load(path)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    return cfg  # type: ignore[return-value]


def section(cfg: DictConfig, name: str) -> DictConfig:
    """One stage's section, with a clear error when params.yaml lacks it."""
    if name not in cfg:
        raise ReviewpipeError(f"params.yaml has no `{name}` section; add conf/{name}/ and recompose.")
    return cfg[name]


def to_dict(node: Any) -> Any:
    """Plain Python containers (for JSON, hashing, kwargs)."""
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def compose_params(
    conf_dir: str | Path = "conf", output: str | Path = DEFAULT_PARAMS, overrides: list[str] | None = None
) -> None:
    """Compose conf/ into params.yaml exactly as `dvc exp run` does (DVC's own Hydra helper)."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(output, str(Path(conf_dir).resolve()), None, "config", "", overrides or [])
