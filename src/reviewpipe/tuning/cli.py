"""`reviewpipe tune`: an Optuna study over a model's hyperparameters, scored on the validation split.

  reviewpipe tune --model baseline --trials 20 --sampler tpe
  reviewpipe tune --model bert --trials 8 --pruner median --timeout 3600 --write-back

The search space and defaults come from conf/tune/<model>.yaml (the `tune` section of params.yaml
when it is that model's). Results go to reports/tune/<model>/: trials.csv, best_params.json and
plots. --write-back puts the best values into the conf/ file that supplies the model's section and
recomposes params.yaml, so the next `dvc repro` / `dvc exp run` trains with them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

MODELS = ("baseline", "bert")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", choices=MODELS, help="section to tune (default: tune.model in params.yaml)"
    )
    parser.add_argument("--trials", type=int, help="number of trials (default: tune.trials)")
    parser.add_argument("--sampler", choices=("random", "tpe"), help="Optuna sampler (default: tune.sampler)")
    parser.add_argument(
        "--pruner", choices=("median", "none"), help="stop poor trials early (default: tune.pruner)"
    )
    parser.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds")
    parser.add_argument("--seed", type=int, help="sampler seed (default: tune.seed)")
    parser.add_argument(
        "--write-back",
        action="store_true",
        help="write the best params into conf/<model>/<selected>.yaml and recompose params.yaml",
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--conf-dir", default="conf", help="Hydra conf folder (default: conf)")
    parser.add_argument("--out-dir", help="output root (default: tune.out_dir, reports/tune)")
    parser.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="override a param for this run, e.g. -S tune.objective.max_train_rows=5000",
    )


def tune_section(
    params: Any, model: str | None, conf_dir: str | Path, overrides: list[str] | None = None
) -> dict[str, Any]:
    """params.yaml's `tune` section when it is for `model`, else conf/tune/<model>.yaml with the
    command's `-S tune.*` overrides applied."""
    from omegaconf import OmegaConf

    from reviewpipe.config import to_dict
    from reviewpipe.errors import ReviewpipeError

    current = to_dict(params.get("tune")) or {}
    model = model or current.get("model")
    if not model:
        raise ReviewpipeError(
            "no model to tune: pass --model baseline|bert (params.yaml has no tune section)."
        )
    if current.get("model") == model:
        return dict(current)
    path = Path(conf_dir) / "tune" / f"{model}.yaml"
    if not path.exists():
        raise ReviewpipeError(f"no search space for {model}: {path} is missing.")
    # The file's interpolations (${paths.prepared}, ...) resolve against the rest of params.yaml.
    cfg = OmegaConf.create({k: v for k, v in to_dict(params).items() if k != "tune"})
    cfg.tune = OmegaConf.load(path)
    tune_overrides = [o for o in overrides or [] if o.startswith("tune.")]
    if tune_overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(tune_overrides))
    return dict(to_dict(cfg.tune))


def run(args: argparse.Namespace) -> int:
    import optuna

    from reviewpipe.config import load_params, section, to_dict
    from reviewpipe.storage import StorageOptions
    from reviewpipe.tuning.objectives import complete_section, make_objective, read_tuning_data
    from reviewpipe.tuning.study import (
        TuneSettings,
        best_summary,
        run_study,
        score_current,
        write_outputs,
    )

    params = load_params(args.params, args.overrides)
    cfg = tune_section(params, args.model, args.conf_dir, args.overrides)
    flags = {
        "trials": args.trials,
        "sampler": args.sampler,
        "pruner": args.pruner,
        "seed": args.seed,
        "timeout_s": args.timeout,
        "out_dir": args.out_dir,
    }
    cfg.update({k: v for k, v in flags.items() if v is not None})
    settings = TuneSettings.from_params(cfg)
    model_section = complete_section(settings.model, to_dict(section(params, settings.model)))
    options = StorageOptions.from_params(params.get("storage"))
    data = read_tuning_data(settings.data_dir, options)
    objective = make_objective(settings, model_section, data, options)
    print(
        f"tune: {settings.model}, {settings.trials} trials, {settings.sampler} sampler (seed {settings.seed}), "
        f"pruner {settings.pruner}; train {len(data['train'])} rows, validation {len(data['validation'])} rows"
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one line per trial, not per Trainer
    current = None
    if settings.score_current:
        current = score_current(objective, model_section, [d.name for d in settings.space])
        print(f"tune: current {settings.model} settings score {current:.4f} validation macro-F1")
    study = run_study(objective, model_section, settings, callbacks=[_print_trial])
    summary = best_summary(study, settings, current)
    paths = write_outputs(study, settings, summary)
    print(
        f"tune: best trial {summary['best_trial']} scores {summary['best_value']:.4f} validation macro-F1 "
        f"({summary['trials_complete']} complete, {summary['trials_pruned']} pruned) with {summary['params']}"
    )
    print(f"tune: wrote {', '.join(str(p) for p in paths.values())}")
    if args.write_back:
        _write_back(settings.model, summary, args.conf_dir, args.params)
    return 0


def _print_trial(study: Any, trial: Any) -> None:
    value = f"{trial.value:.4f}" if trial.value is not None else "-"
    steps = f", {len(trial.intermediate_values)} steps" if trial.intermediate_values else ""
    seconds = (
        (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete else 0
    )
    print(
        f"tune: trial {trial.number} {trial.state.name.lower()} {value}{steps} ({seconds:.1f} s) {trial.params}"
    )


def _write_back(model: str, summary: dict[str, Any], conf_dir: str, params_path: str) -> None:
    from reviewpipe.tuning.writeback import write_back

    current = summary.get("current_value")
    if current is not None and summary["best_value"] <= current:
        print(
            f"tune: not writing back: the best trial ({summary['best_value']:.4f}) does not beat the current "
            f"settings ({current:.4f}); conf/ is unchanged."
        )
        return
    conf_file, changes = write_back(model, summary["params"], conf_dir, params_path)
    for key, (old, new) in changes.items():
        print(f"tune: {conf_file}: {key}: {old!r} -> {new!r}")
    print(
        f"tune: recomposed {params_path} from {conf_dir}/ (commit both; `dvc repro {model}` retrains with them)"
    )
