"""The Optuna study: seeded sampler and pruner from settings, the trial loop, and its outputs.

Outputs in `{out_dir}/{model}/`: trials.csv (one row per trial: number, state, value, duration,
the reported steps, params), best_params.json, and plots (optimisation history, intermediate values,
parameter importances) drawn with optuna.visualization.matplotlib.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from reviewpipe.errors import ReviewpipeError
from reviewpipe.tuning.space import Dimension, apply_overrides, lookup, parse_space, suggest

SAMPLERS = ("random", "tpe")
PRUNERS = ("median", "none")
TRIALS_FILE = "trials.csv"
BEST_FILE = "best_params.json"
PLOTS = {
    "optimization_history.png": "plot_optimization_history",
    "intermediate_values.png": "plot_intermediate_values",
    "param_importances.png": "plot_param_importances",
}

# (trial, the model section with this trial's values) -> validation score; may report and prune.
Objective = Callable[[optuna.Trial, dict[str, Any]], float]


@dataclass(frozen=True)
class TuneSettings:
    """The `tune` section (conf/tune/<model>.yaml) after command-line overrides."""

    model: str
    space: list[Dimension]
    trials: int = 20
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 42
    timeout_s: float | None = None
    startup_trials: int = 5  # trials the pruner lets finish before comparing (and TPE samples at random)
    warmup_steps: int = 0  # reports within a trial before it may be pruned
    data_dir: str = "data/prepared"
    out_dir: str = "reports/tune"
    score_current: bool = True  # also score the model section as configured now, for comparison
    objective: dict[str, Any] = field(default_factory=dict)  # per-model objective settings

    @classmethod
    def from_params(cls, cfg: Mapping[str, Any]) -> TuneSettings:
        cfg = dict(cfg)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ReviewpipeError(f"unknown tune settings {unknown}; known: {sorted(known)}.")
        if "model" not in cfg:
            raise ReviewpipeError("the tune section needs `model` (the params section it tunes).")
        cfg["space"] = parse_space(cfg.get("space"))
        cfg["objective"] = dict(cfg.get("objective") or {})
        settings = cls(**cfg)
        settings.check()
        return settings

    def check(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ReviewpipeError(f"sampler {self.sampler!r} is not one of {', '.join(SAMPLERS)}.")
        if self.pruner not in PRUNERS:
            raise ReviewpipeError(f"pruner {self.pruner!r} is not one of {', '.join(PRUNERS)}.")
        if int(self.trials) < 1:
            raise ReviewpipeError(f"trials must be at least 1 (got {self.trials}).")
        if self.timeout_s is not None and float(self.timeout_s) <= 0:
            raise ReviewpipeError(f"timeout must be positive seconds (got {self.timeout_s}).")

    @property
    def model_dir(self) -> Path:
        return Path(self.out_dir) / self.model


def make_sampler(settings: TuneSettings) -> optuna.samplers.BaseSampler:
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=settings.seed)
    return optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=settings.startup_trials)


def make_pruner(settings: TuneSettings) -> optuna.pruners.BasePruner:
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=settings.startup_trials, n_warmup_steps=settings.warmup_steps
    )


def run_study(
    objective: Objective,
    section: Mapping[str, Any],
    settings: TuneSettings,
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
) -> optuna.Study:
    """Maximise `objective` over the space; each trial gets `section` with its values applied."""
    apply_overrides(
        section, {d.name: _any_value(d) for d in settings.space}
    )  # unknown keys fail before trial 0
    study = optuna.create_study(
        direction="maximize",
        sampler=make_sampler(settings),
        pruner=make_pruner(settings),
        study_name=f"reviewpipe-{settings.model}",
    )

    def trial_objective(trial: optuna.Trial) -> float:
        values = suggest(trial, settings.space)
        score = float(objective(trial, apply_overrides(section, values)))
        if not math.isfinite(score):
            raise optuna.TrialPruned(f"objective returned {score}")
        return score

    study.optimize(
        trial_objective,
        n_trials=int(settings.trials),
        timeout=float(settings.timeout_s) if settings.timeout_s else None,
        callbacks=callbacks,
    )
    return study


def _any_value(dimension: Dimension) -> Any:
    return dimension.choices[0] if dimension.kind == "categorical" else dimension.low


def score_current(objective: Objective, section: Mapping[str, Any], names: list[str]) -> float:
    """The objective for the section as configured now (a FixedTrial: reports are ignored, never pruned)."""
    current = {name: lookup(section, name) for name in names}
    return float(objective(optuna.trial.FixedTrial(current), dict(section)))


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value (complete trials), duration_s, steps reported, last reported
    value, params_*."""
    rows = []
    for t in study.trials:
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        last_step = max(t.intermediate_values) if t.intermediate_values else None
        # Optuna keeps a pruned trial's last report as its value; the table shows it as last_intermediate only.
        value = t.value if t.state == optuna.trial.TrialState.COMPLETE else None
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": value,
                "duration_s": round(duration, 3) if duration is not None else None,
                "steps_reported": len(t.intermediate_values),
                "last_intermediate": t.intermediate_values.get(last_step) if last_step is not None else None,
                **{f"params_{k}": v for k, v in t.params.items()},
            }
        )
    return pd.DataFrame(rows)


def best_summary(study: optuna.Study, settings: TuneSettings, current_value: float | None) -> dict[str, Any]:
    states = [t.state for t in study.trials]
    count = {
        s.name.lower(): states.count(s)
        for s in (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.FAIL,
        )
    }
    if count["complete"] == 0:
        raise ReviewpipeError(
            f"no trial completed ({count['pruned']} pruned, {count['fail']} failed); "
            "run more trials, or use --pruner none."
        )
    best = study.best_trial
    return {
        "model": settings.model,
        "objective": "validation macro-F1 (train split fit, validation split scored)",
        "best_value": best.value,
        "best_trial": best.number,
        "params": dict(best.params),
        "current_value": current_value,
        "improvement": None if current_value is None else best.value - current_value,
        "sampler": settings.sampler,
        "pruner": settings.pruner,
        "seed": settings.seed,
        "trials": len(study.trials),
        **{f"trials_{k}": v for k, v in count.items()},
    }


def write_outputs(study: optuna.Study, settings: TuneSettings, summary: Mapping[str, Any]) -> dict[str, Path]:
    """trials.csv, best_params.json and the plots into the model's output folder; returns the paths."""
    out = settings.model_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = {"trials": out / TRIALS_FILE, "best": out / BEST_FILE}
    trials_frame(study).to_csv(paths["trials"], index=False)
    paths["best"].write_text(json.dumps(dict(summary), indent=2, sort_keys=True, default=str) + "\n")
    paths.update(write_plots(study, out, summary.get("current_value")))
    return paths


def write_plots(study: optuna.Study, out: Path, current_value: float | None = None) -> dict[str, Path]:
    """The plots Optuna can draw for this study (importances need two finished trials and a varying value);
    the history marks the current settings' score when it was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    written: dict[str, Path] = {}
    for filename, function in PLOTS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
            try:
                axes = getattr(optuna_plots, function)(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                print(f"tune: skipped {filename}: {exc}")
                continue
        ax = axes.flat[0] if hasattr(axes, "flat") else axes
        if function == "plot_optimization_history":
            ax.set_ylabel("validation macro-F1")
            if current_value is not None:
                ax.axhline(current_value, color="grey", linestyle="--", label="current settings")
                ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
        figure = ax.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figure.savefig(out / filename, dpi=110)
        plt.close(figure)
        written[filename.removesuffix(".png")] = out / filename
    return written
