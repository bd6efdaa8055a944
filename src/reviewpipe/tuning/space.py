"""Search spaces from config: `{dotted.key: {type, low, high, log, step | choices}}` -> Optuna suggestions.

Each name is a key path inside the tuned model's params section (`C`, `tfidf.word_ngram_max`,
`learning_rate`), so a trial's parameters are exactly the overrides that section takes, the same
names `dvc exp run -S baseline.C=...` sweeps over, and what `--write-back` writes into conf/.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from reviewpipe.errors import ReviewpipeError

KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter: a float or int range (optionally log-scaled or stepped) or a set of choices."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log, step=self.step)


def parse_dimension(name: str, spec: Mapping[str, Any]) -> Dimension:
    """One `space` entry, checked, with messages that say how to fix the config."""
    where = f"search space entry `{name}`"
    if not isinstance(spec, Mapping):
        raise ReviewpipeError(
            f"{where} must be a mapping such as {{type: float, low: 0.1, high: 20, log: true}}."
        )
    kind = str(spec.get("type", "categorical" if "choices" in spec else "float"))
    if kind not in KINDS:
        raise ReviewpipeError(f"{where} has type {kind!r}; use one of {', '.join(KINDS)}.")
    if kind == "categorical":
        choices = spec.get("choices")
        if not choices or isinstance(choices, str | bytes):
            raise ReviewpipeError(f"{where} is categorical: give a non-empty `choices` list.")
        return Dimension(name, kind, choices=tuple(choices))
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ReviewpipeError(f"{where} needs numeric `low` and `high`.") from exc
    log, step = bool(spec.get("log", False)), spec.get("step")
    if low > high:
        raise ReviewpipeError(f"{where}: low ({low}) is above high ({high}).")
    if log and low <= 0:
        raise ReviewpipeError(f"{where}: a log-scaled range needs low > 0 (got {low}).")
    if log and step is not None:
        raise ReviewpipeError(f"{where}: use either `log: true` or `step`, not both (Optuna cannot do both).")
    return Dimension(name, kind, low, high, log, float(step) if step is not None else None)


def parse_space(space: Mapping[str, Any] | None) -> list[Dimension]:
    if not space:
        raise ReviewpipeError(
            "the search space is empty: list hyperparameters under `space:` in conf/tune/<model>.yaml."
        )
    return [parse_dimension(str(name), spec) for name, spec in space.items()]


def suggest(trial: optuna.Trial, dimensions: list[Dimension]) -> dict[str, Any]:
    """{dotted key: value} for this trial."""
    return {d.name: d.suggest(trial) for d in dimensions}


def locate(document: Any, dotted: str) -> tuple[Any, str | int]:
    """(container, key) holding a dotted key; a numeric part indexes a list (`word.ngram_range.1`)."""
    node = document
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        if isinstance(node, Mapping) and part in node:
            key: str | int = part
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            key = int(part)
        else:
            known = ", ".join(sorted(map(str, node))) if isinstance(node, Mapping) else type(node).__name__
            raise ReviewpipeError(
                f"search space key `{dotted}`: no `{part}` there (known: {known}); "
                "use key paths of the model section in conf/tune/<model>.yaml."
            )
        if depth == len(parts) - 1:
            return node, key
        node = node[key]
    raise ReviewpipeError("search space key is empty")


def lookup(document: Any, dotted: str) -> Any:
    container, key = locate(document, dotted)
    return container[key]


def apply_overrides(section: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `section` with each dotted key set; a key the section lacks is a config mistake."""
    out = copy.deepcopy(dict(section))
    for dotted, value in overrides.items():
        container, key = locate(out, dotted)
        container[key] = value
    return out
