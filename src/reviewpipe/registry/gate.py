"""The gate (a Pipelines ConditionStep): pick the champion among the evaluated candidates by one
metric on the selection set (validation), then pass it only when every check holds:

- quality: the metric reaches register.min_metric;
- fairness: no error-rate gap between a group and the rest is, with confidence, wider than
  register.fairness.max_gap (evaluation/gaps.py measures them with bootstrap intervals);
- serving: the packaged artifact, served through its own code/inference.py with the backend deploy
  runs, loses at most register.max_serving_drop accuracy against the same package at fp32 and
  agrees with it on at least register.min_serving_agreement of the reviews.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from reviewpipe.errors import ReviewpipeError

if TYPE_CHECKING:  # the measurements come from evaluation/gaps.py; package and deploy never need it
    from reviewpipe.evaluation.gaps import Excluded, Gap


@dataclass(frozen=True)
class Check:
    """One condition of the gate: what was measured, against what limit, and whether it held."""

    name: str  # quality | fairness | serving
    passed: bool
    detail: str  # one line for people: the measurement and the limit
    inputs: dict[str, Any] = field(default_factory=dict)  # the numbers, for the registry record


@dataclass(frozen=True)
class GateDecision:
    """What the condition step decided about the champion, and why: it passes iff every check does."""

    champion: str
    select_on: str
    metric: str
    metric_value: float
    checks: tuple[Check, ...]
    ranking: tuple[tuple[str, float], ...] = ()

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(c.detail for c in self.checks if not c.passed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "champion": self.champion,
            "select_on": self.select_on,
            "metric": self.metric,
            "metric_value": self.metric_value,
            "passed": self.passed,
            "reasons": list(self.reasons),
            "checks": [asdict(c) for c in self.checks],
            "ranking": [{"model": m, "value": v} for m, v in self.ranking],
        }


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


def selection_view(metrics: dict[str, Any], select_on: str) -> dict[str, Any]:
    """evaluate's metrics.json narrowed to the set the gate may look at: {model: metrics on it}.

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
    return {name: by_set[select_on] for name, by_set in metrics["models"].items() if select_on in by_set}


def quality_check(
    metric: str, value: float, min_metric: float, select_on: str, served: float | None = None
) -> Check:
    """The champion's selection-set metric reaches register.min_metric. `served`: the same metric of
    the packaged artifact as it answers (calibration and decision rule included, the deploy target's
    backend); when given, it is what must reach the minimum, since it is what users get."""
    judged = value if served is None else served
    passed = judged >= min_metric
    relation = ">=" if passed else "is below"
    what = f"{select_on} {metric}" if served is None else f"served {select_on} {metric}"
    detail = f"{what} {judged:.4f} {relation} register.min_metric {min_metric}"
    inputs: dict[str, Any] = {"metric": metric, "value": value, "min_metric": min_metric, "set": select_on}
    if served is not None:
        detail += f" (model as evaluated: {value:.4f})"
        inputs["served_value"] = served
    return Check("quality", passed, detail, inputs)


def exceeds(gap: Gap, threshold: float) -> bool:
    """A gap counts only when its whole interval lies beyond the threshold (either direction)."""
    return gap.low > threshold or gap.high < -threshold


def fairness_check(
    gaps: Sequence[Gap], excluded: Sequence[Excluded], max_gap: float, confidence: float
) -> Check:
    """Fails when some group-vs-rest gap's whole interval lies beyond register.fairness.max_gap."""
    counted = [g for g in gaps if exceeds(g, max_gap)]
    widest = max(gaps, key=lambda g: max(g.low, -g.high), default=None)  # the gap nearest to counting
    inputs = {
        "max_gap": max_gap,
        "confidence": confidence,
        "gaps_measured": len(gaps),
        "groups_excluded": len(excluded),
        "exceeding": [g.to_dict() for g in counted],
        "widest": widest.to_dict() if widest else None,
    }
    if not gaps:
        return Check("fairness", False, "no group is large enough to measure a fairness gap", inputs)
    if counted:
        worst = max(counted, key=lambda g: max(g.low, -g.high))
        return Check(
            "fairness",
            False,
            f"{len(counted)} fairness gap(s) exceed register.fairness.max_gap {max_gap} with "
            f"{confidence:.0%} confidence; widest: {describe(worst)}",
            inputs,
        )
    assert widest is not None
    return Check(
        "fairness",
        True,
        f"no fairness gap exceeds register.fairness.max_gap {max_gap} with {confidence:.0%} confidence "
        f"({len(gaps)} measured, {len(excluded)} too small); widest: {describe(widest)}",
        inputs,
    )


def describe(gap: Gap) -> str:
    """`accuracy of product_category=Jackets: 0.31 [0.18, 0.44] worse than the rest (n=52 vs 659)`."""
    side = "worse" if gap.gap >= 0 else "better"
    return (
        f"{gap.measure} of {gap.feature}={gap.group}: {abs(gap.gap):.2f} [{gap.low:.2f}, {gap.high:.2f}] "
        f"{side} than the rest (n={gap.group_rows} vs {gap.rest_rows})"
    )


def serving_check(figures: dict[str, Any], select_on: str, max_drop: float, min_agreement: float) -> Check:
    """The served package against the same package at fp32, on the selection set's rows.

    `figures`: {"backend": ..., "sets": {name: {"fp32": {"accuracy", ...}, "served": {...},
    "agreement", "max_probability_difference"}}} (what register records)."""
    if select_on not in figures["sets"]:
        raise ReviewpipeError(
            f"the serving check needs the {select_on!r} set: add it to register.serving_sets "
            f"(now {sorted(figures['sets'])})."
        )
    row = figures["sets"][select_on]
    drop = float(row["fp32"]["accuracy"] - row["served"]["accuracy"])
    agreement = float(row["agreement"])
    inputs = {
        "backend": figures["backend"],
        "set": select_on,
        "fp32_accuracy": row["fp32"]["accuracy"],
        "served_accuracy": row["served"]["accuracy"],
        "drop": drop,
        "agreement": agreement,
        "max_drop": max_drop,
        "min_agreement": min_agreement,
    }
    measured = (
        f"served {figures['backend']} on {select_on}: accuracy {row['served']['accuracy']:.4f} vs fp32 "
        f"{row['fp32']['accuracy']:.4f} (drop {drop:+.4f}), agreement {agreement:.4f}"
    )
    failures = []
    if drop > max_drop:
        failures.append(f"drop exceeds register.max_serving_drop {max_drop}")
    if agreement < min_agreement:
        failures.append(f"agreement is below register.min_serving_agreement {min_agreement}")
    if failures:
        return Check("serving", False, f"{measured}: {'; '.join(failures)}", inputs)
    return Check("serving", True, measured, inputs)
