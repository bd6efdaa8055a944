"""The quality gate (a Pipelines ConditionStep): pick the champion among evaluated models by one
metric and pass it only when the metric reaches a floor and its largest between-group fairness gap
stays under a ceiling."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from reviewpipe.errors import ReviewpipeError


@dataclass(frozen=True)
class GateDecision:
    """What the condition step decided about the champion, and why."""

    champion: str
    metric: str
    metric_value: float
    fairness_gap: float | None
    min_metric: float
    max_group_gap: float
    passed: bool
    reasons: tuple[str, ...]
    ranking: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        out["ranking"] = [{"model": m, "value": v} for m, v in self.ranking]
        return out


def choose_champion(
    models: dict[str, dict[str, Any]], metric: str, candidates: list[str] | None = None
) -> tuple[str, list[tuple[str, float]]]:
    """The best model by `metric` (higher is better) and the full ranking; ties go to the first name."""
    pool = {name: m for name, m in models.items() if not candidates or name in candidates}
    if not pool:
        raise ReviewpipeError(
            f"no candidate model to register: metrics has {sorted(models)}, register.candidates is "
            f"{candidates}. Evaluate at least one of the candidates first."
        )
    missing = [name for name, m in pool.items() if not isinstance(m.get(metric), int | float)]
    if missing:
        raise ReviewpipeError(
            f"metric {metric!r} missing for {missing} in the evaluation metrics; set register.metric "
            f"to one of {sorted(next(iter(pool.values())))}."
        )
    ranking = sorted(((name, float(m[metric])) for name, m in pool.items()), key=lambda item: -item[1])
    return ranking[0][0], ranking


def largest_gap(fairness: dict[str, Any], model: str) -> float | None:
    """The largest between-group gap recorded for `model` (None when fairness says nothing about it).

    Reads the evaluate stage's fairness.json: `{"models": {name: {"largest_gap": {"value": ...},
    <feature>: {"gaps": {metric: gap}, ...}}}}`. Other layouts work too: without a model-level
    `largest_gap.value`, numbers under any key containing "gap" count; when no key mentions a gap,
    the model's section itself is read as {metric: gap}.
    """
    section = fairness.get("models", fairness)
    if not isinstance(section, dict) or not isinstance(section.get(model), dict):
        return None
    report = section[model]
    stated = report.get("largest_gap")
    if isinstance(stated, dict) and isinstance(stated.get("value"), int | float):
        return float(stated["value"])
    gaps = list(_numbers(report, counted=False))
    if not gaps:
        gaps = list(_numbers(report, counted=True))
    return max(gaps) if gaps else None


def _numbers(node: Any, counted: bool) -> Iterator[float]:
    """Numbers in a nested section; `counted` turns on below any key that mentions a gap."""
    if isinstance(node, bool):
        return
    if isinstance(node, int | float):
        if counted:
            yield float(node)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _numbers(value, counted or "gap" in str(key).lower())
    elif isinstance(node, list):
        for value in node:
            yield from _numbers(value, counted)


def selection_view(
    metrics: dict[str, Any], fairness: dict[str, Any] | None, select_on: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The evaluate stage's per-set files narrowed to the set the gate may look at.

    metrics.json is `{"sets": {name: {"role": ...}}, "models": {model: {set: row}}}`; only a set
    whose role is `select` may choose or gate (test is reported, never chosen on).
    """
    sets = metrics.get("sets") or {}
    if select_on not in sets:
        raise ReviewpipeError(
            f"register.select_on is {select_on!r} but the evaluation has sets {sorted(sets)}; "
            "add it to evaluate.sets or pick one of those."
        )
    if sets[select_on]["role"] != "select":
        raise ReviewpipeError(
            f"evaluation set {select_on!r} has role {sets[select_on]['role']!r}: it is reported, never "
            "used to choose; set register.select_on to a set with role `select` (validation)."
        )
    models = {name: by_set[select_on] for name, by_set in metrics["models"].items()}
    if fairness is None:
        return models, None
    return models, {
        "models": {
            name: by_set[select_on] for name, by_set in fairness["models"].items() if select_on in by_set
        }
    }


def evaluate_gate(
    metrics: dict[str, Any],
    fairness: dict[str, Any] | None,
    metric: str,
    min_metric: float,
    max_group_gap: float,
    candidates: list[str] | None = None,
) -> GateDecision:
    """ConditionStep: champion by `metric`; passes iff metric >= min_metric and gap <= max_group_gap."""
    models = metrics.get("models", metrics)
    champion, ranking = choose_champion(models, metric, candidates)
    value = ranking[0][1]
    gap = largest_gap(fairness or {}, champion)
    reasons: list[str] = []
    if value < min_metric:
        reasons.append(f"{metric} {value:.4f} is below register.min_metric {min_metric}")
    if gap is None:
        reasons.append(f"no fairness gap recorded for {champion!r}; cannot check register.max_group_gap")
    elif gap > max_group_gap:
        reasons.append(f"largest between-group gap {gap:.4f} exceeds register.max_group_gap {max_group_gap}")
    return GateDecision(
        champion=champion,
        metric=metric,
        metric_value=value,
        fairness_gap=gap,
        min_metric=min_metric,
        max_group_gap=max_group_gap,
        passed=not reasons,
        reasons=tuple(reasons),
        ranking=tuple(ranking),
    )
