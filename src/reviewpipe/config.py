"""params.yaml (composed by DVC from conf/) -> OmegaConf config, one section per stage, validated
against the typed schema in reviewpipe.schema."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from reviewpipe.errors import ReviewpipeError

DEFAULT_PARAMS = Path("params.yaml")
SCHEMA_FILE = "src/reviewpipe/schema.py"
# Errors that only say a key is absent: allowed when loading (a params file may hold some sections,
# or part of one); the composed params.yaml is checked complete by the tests.
_ABSENT = ("missing", "union_tag_not_found")
_NOT_IN_CONF = "not from conf/: a -S override or a hand edit of params.yaml"


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
    validate_params(cfg, conf_dir=_conf_dir_for(path), source=str(path))
    return cfg  # type: ignore[return-value]


def _conf_dir_for(params_path: Path) -> Path | None:
    """conf/ beside params.yaml, else the working directory's (a params file written elsewhere)."""
    for candidate in (params_path.resolve().parent / "conf", Path("conf")):
        if candidate.is_dir():
            return candidate
    return None


def validate_params(
    cfg: Any, *, conf_dir: str | Path | None = None, source: str = "params.yaml", complete: bool = False
) -> None:
    """Check params against reviewpipe.schema: unknown keys, wrong types and values outside a fixed set
    raise a ReviewpipeError naming each key and the conf/ file that sets it. `complete`: every section
    and key must be present too (true for a params.yaml composed from conf/)."""
    from pydantic import ValidationError

    from reviewpipe.schema import Params

    try:
        values = to_dict(cfg)
    except Exception as exc:  # an interpolation that does not resolve
        raise ReviewpipeError(f"{source}: {exc}") from exc
    try:
        Params.model_validate(values)
    except ValidationError as exc:
        errors = [e for e in exc.errors() if complete or e["type"] not in _ABSENT]
        if errors:
            raise _schema_error(errors, values, conf_dir, source) from None


def validation_error(exc: Exception, section_name: str, values: Any, source: str = "params") -> Exception:
    """A pydantic ValidationError of one section's `values` as the ReviewpipeError load_params raises."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return exc
    errors = [{**e, "loc": (section_name, *e["loc"])} for e in exc.errors()]
    return _schema_error(errors, {section_name: values}, _conf_dir_for(Path("params.yaml")), source)


def _schema_error(
    errors: list[dict[str, Any]], values: Any, conf_dir: Path | None, source: str
) -> ReviewpipeError:
    """One message for all errors, one line per key (a union's per-member errors merged)."""
    by_key: dict[tuple, list[dict[str, Any]]] = {}
    for error in errors:
        by_key.setdefault(_key_path(error["loc"], values), []).append(error)
    lines, sections = [], set()
    for key, errs in by_key.items():
        sections.add(str(key[0]) if key else "")
        name = ".".join(map(str, key)) or "(top level)"
        kinds = {e["type"] for e in errs}
        if "extra_forbidden" in kinds:
            where = _conf_files(conf_dir, key)
            lines.append(
                f"  {name}: unknown key{_did_you_mean(key, values)}; "
                + (f"set in {', '.join(where)}" if where else _NOT_IN_CONF)
            )
        elif kinds <= set(_ABSENT):
            lines.append(
                f"  {name}: missing; give it a value in conf/{key[0]}/ (every default lives in conf/)"
            )
        else:
            got = errs[0].get("input")
            where = _conf_files(conf_dir, key, got)
            reason = "; or ".join(dict.fromkeys(e["msg"] for e in errs))
            lines.append(
                f"  {name}: {reason} (got {got!r})"
                + (f"; set in {', '.join(where)}" if where else f"; {_NOT_IN_CONF}")
            )
    models = ", ".join(sorted(_model_names(s, values) for s in sections if s))
    return ReviewpipeError(
        f"{source} does not match the settings schema:\n"
        + "\n".join(lines)
        + "\nFix the conf/ file named (then `make params`) or the -S override. A new setting needs its "
        f"default in conf/ and a field in {models or 'Params'} ({SCHEMA_FILE})."
    )


def _key_path(loc: Sequence[Any], values: Any) -> tuple:
    """The part of a pydantic location that is a path in the data: union member tags ('int',
    'local', ...) dropped; a missing key, the last part, kept."""
    if values is None:
        return tuple(loc)
    path: list[Any] = []
    node = values
    for i, part in enumerate(loc):
        if isinstance(node, dict | list) and _has(node, part):
            node = node[part]
            path.append(part)
        elif i == len(loc) - 1 and isinstance(node, dict):
            path.append(part)
    return tuple(path)


def _did_you_mean(key: tuple, values: Any) -> str:
    fields = [name for model in _schema_at(key[:-1], values) for name in _fields(model)]
    close = difflib.get_close_matches(str(key[-1]), fields, n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _model_names(section_name: str, values: Any) -> str:
    models = _schema_at((section_name,), values)
    if not models:
        return f"Params (it has no `{section_name}`)"
    node = values.get(section_name) if isinstance(values, dict) else None
    chosen = models[0] if len(models) == 1 else _tagged(models, node)
    return chosen.__name__ if chosen else " / ".join(m.__name__ for m in models)


def _schema_at(path: Sequence[Any], values: Any) -> list[Any]:
    """The schema models that describe the mapping at `path` (the union member the data selects)."""
    from reviewpipe.schema import Params

    annotation: Any = Params
    node = values
    for part in path:
        if models := _models_in(annotation):
            info = _fields(_choose(models, node)).get(part)
            if info is None:
                return []
            annotation = info.annotation
        else:  # list[X] or dict[str, X]: the items' type
            args = typing.get_args(annotation)
            if typing.get_origin(annotation) not in (list, dict) or not args:
                return []
            annotation = args[-1]
        node = node[part] if isinstance(node, dict | list) and _has(node, part) else None
    return _models_in(annotation)


def _models_in(annotation: Any) -> list[Any]:
    """pydantic models an annotation holds directly (through Annotated, unions and Optional)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (list, dict):
        return []
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def _fields(model: Any) -> dict[str, Any]:
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _choose(models: list[Any], node: Any) -> Any:
    return (_tagged(models, node) if len(models) > 1 else None) or models[0]


def _tagged(models: list[Any], node: Any) -> Any | None:
    """The union member whose literal tag (deploy.target, tune.model) the data holds."""
    for model in models if isinstance(node, dict) else []:
        for name, info in _fields(model).items():
            literal = typing.get_origin(info.annotation) is typing.Literal
            if literal and name in node and node[name] in typing.get_args(info.annotation):
                return model
    return None


def _has(node: Any, part: Any) -> bool:
    return part in node if isinstance(node, dict) else isinstance(part, int) and 0 <= part < len(node)


def _conf_files(conf_dir: Path | None, key: tuple, value: Any = ...) -> list[str]:
    """conf/ files that set `key` (to `value`, when given): the section's group files, config.yaml."""
    if conf_dir is None or not key:
        return []
    section, rest = str(key[0]), key[1:]
    candidates = [(p, rest) for p in sorted((conf_dir / section).glob("*.yaml"))]
    candidates.append((conf_dir / "config.yaml", key))
    found = []
    for path, inner in candidates:
        try:
            node = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        except yaml.YAMLError:
            continue
        for part in inner:
            if not (isinstance(node, dict | list) and _has(node, part)):
                break
            node = node[part]
        else:
            if value is ... or node == value:
                found.append(str(Path(conf_dir.name) / path.relative_to(conf_dir)))
    return found


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
    """Compose conf/ into params.yaml exactly as `dvc exp run` does (DVC's own Hydra helper),
    published atomically (composed in a temporary folder, then written over it whole)."""
    import tempfile

    from dvc.utils.hydra import compose_and_dump

    from reviewpipe import storage

    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="reviewpipe-compose-") as tmp:
        composed = Path(tmp) / output.name
        compose_and_dump(composed, str(Path(conf_dir).resolve()), None, "config", "", overrides or [])
        storage.write_bytes(str(output), composed.read_bytes())
