"""Write tuned values into the conf/ file that supplies the model's section, then recompose params.yaml.

The file is the one conf/config.yaml's defaults list selects for the section (`baseline: default`
-> conf/baseline/default.yaml). It is edited with ruamel.yaml's round trip, so comments, key order
and layout stay; only the tuned keys change.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from reviewpipe import storage
from reviewpipe.errors import ReviewpipeError
from reviewpipe.tuning.space import locate, lookup


def selected_conf_file(conf_dir: str | Path, group: str) -> Path:
    """The group file the root config's defaults list selects for `group`."""
    conf_dir = Path(conf_dir)
    root = conf_dir / "config.yaml"
    if not root.exists():
        raise ReviewpipeError(f"{root} not found; pass --conf-dir pointing at the Hydra conf/ folder.")
    defaults = YAML(typ="safe").load(root.read_text()).get("defaults") or []
    for entry in defaults:
        if isinstance(entry, Mapping) and group in entry:
            path = conf_dir / group / f"{entry[group]}.yaml"
            if not path.exists():
                raise ReviewpipeError(f"{root} selects `{group}: {entry[group]}` but {path} does not exist.")
            return path
    raise ReviewpipeError(
        f"{root} has no `{group}` entry in its defaults list; add `- {group}: default` "
        "before `_self_` so the section comes from a conf group file."
    )


def _round_trip_yaml(text: str) -> YAML:
    yaml = YAML()  # round trip: comments and order survive
    yaml.preserve_quotes = True
    yaml.width = 4096
    # Keep the file's list layout: dashes indented under their key, or flush with it.
    match = re.search(r"^( *)[^\s#-][^\n]*:[ \t]*(?:#[^\n]*)?\n( *)- ", text, flags=re.MULTILINE)
    if match and len(match.group(2)) > len(match.group(1)):
        offset = len(match.group(2)) - len(match.group(1))
        yaml.indent(mapping=2, sequence=offset + 2, offset=offset)
    else:
        yaml.indent(mapping=2, sequence=2, offset=0)
    return yaml


def write_values(path: str | Path, values: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Set each dotted key in the YAML file; returns {key: (old, new)}. Keys must already exist there."""
    path = Path(path)
    text = path.read_text()
    yaml = _round_trip_yaml(text)
    document = yaml.load(text)
    changes: dict[str, tuple[Any, Any]] = {}
    for dotted, value in values.items():
        try:
            container, key = locate(document, dotted)
        except ReviewpipeError as exc:
            raise ReviewpipeError(
                f"{path} has no key `{dotted}` to write the tuned value into ({exc}); add it "
                "to the file with its current default and run again."
            ) from exc
        changes[dotted] = (container[key], value)
        container[key] = value
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    storage.write_text(str(path), buffer.getvalue())  # atomic: a kill never leaves a half-written conf file
    return changes


def write_back(
    model: str,
    values: Mapping[str, Any],
    conf_dir: str | Path = "conf",
    params_path: str | Path = "params.yaml",
) -> tuple[Path, dict[str, tuple[Any, Any]]]:
    """Best values -> the model's conf file -> recomposed params.yaml, checked to hold the new values."""
    from omegaconf import OmegaConf

    from reviewpipe.config import compose_params

    conf_file = selected_conf_file(conf_dir, model)
    changes = write_values(conf_file, values)
    compose_params(conf_dir, params_path)
    composed = OmegaConf.to_container(OmegaConf.load(params_path), resolve=True)
    for dotted, value in values.items():
        got = lookup(composed.get(model, {}), dotted)
        if got != value:
            raise ReviewpipeError(
                f"wrote {model}.{dotted}={value!r} into {conf_file}, but the composed {params_path} has "
                f"{got!r}: conf/config.yaml (or a later default) overrides it; move the value into {conf_file}."
            )
    return conf_file, changes
