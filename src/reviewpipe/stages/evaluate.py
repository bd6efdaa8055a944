"""Stage `evaluate`: every configured model on every evaluation set (`evaluate.sets`: validation,
which may choose the champion, and test, which is only reported), through one prediction path.

Sets are balanced (the course's split files) or the natural mix (the same split's rows before
balancing). The stacked ensemble is scored from its members' probabilities. Writes
`{out_dir}/metrics.json` (models -> set -> metrics with bootstrap intervals; the comparison table
register chooses from), `{out_dir}/calibration.json` (per model: calibration fitted on natural-mix
validation, ECE and review-threshold shares before/after, served metrics), reliability diagrams
under `{live_dir}/plots/reliability/`, `{out_dir}/comparison.csv`, `{out_dir}/fairness.json` (fairlearn, per group and the largest
gaps, per set), `{out_dir}/predictions.parquet`, DVCLive metrics and plots under `live_dir`, and
Clarify's post-training analysis.json per set and model under `{bias.out_dir}/post_training/<set>/<model>/`.
"""

from __future__ import annotations

import io

import pandas as pd
from omegaconf import DictConfig

from reviewpipe import storage
from reviewpipe.config import section, to_dict
from reviewpipe.errors import ReviewpipeError
from reviewpipe.evaluation.comparison import (
    comparison_frame,
    fairness_table,
    metrics_table,
    post_training_analyses,
    predictions_frame,
)
from reviewpipe.evaluation.human import rating_agreement
from reviewpipe.evaluation.scoring import score_models
from reviewpipe.evaluation.served import (
    add_ensemble,
    calibration_section,
    interval_table,
    production_prior,
    split_scores,
    training_prior,
    union_set,
)
from reviewpipe.evaluation.sets import load_evaluation_sets
from reviewpipe.models.predictors import configured_models, load_predictor
from reviewpipe.models.splits import prepared_dir, read_class_weights, read_split
from reviewpipe.storage import StorageOptions

ENSEMBLE = "ensemble"


def main(params: DictConfig) -> None:
    cfg = section(params, "evaluate")
    options = StorageOptions.from_params(params.get("storage"))
    models = configured_models(to_dict(cfg))
    sets = load_evaluation_sets(cfg.sets, prepared_dir(params), options)
    if cfg.post_training_bias and "bias" not in params:
        raise ReviewpipeError(
            "evaluate.post_training_bias is on but params.yaml has no `bias` section; "
            "add conf/bias/ or set evaluate.post_training_bias=false."
        )
    features, min_rows = list(cfg.fairness.features), int(cfg.fairness.min_group_rows)

    members = {m: p for m, p in models.items() if m != ENSEMBLE}
    scores = split_scores(score_models(members, [union_set(sets)], int(cfg.batch_size)), sets)
    if ENSEMBLE in models:
        add_ensemble(scores, ENSEMBLE, load_predictor(ENSEMBLE, models[ENSEMBLE]))
    from dvclive import Live

    with Live(dir=str(cfg.live_dir), save_dvc_exp=False, dvcyaml=False, report=None) as live:
        table = metrics_table(scores, live)
    boot = to_dict(cfg.bootstrap)
    for model, by_set in interval_table(
        scores, int(boot["resamples"]), float(boot["confidence"]), int(boot["seed"])
    ).items():
        for set_name, intervals in by_set.items():
            table[model][set_name]["intervals"] = intervals
    data_dir = prepared_dir(params)
    calibration, reliability = calibration_section(
        scores,
        to_dict(cfg.calibration),
        train_prior=training_prior(
            read_split(data_dir, "train", options), read_class_weights(data_dir, options)
        ),
        production=production_prior(read_split(data_dir, "unbalanced", options)),
        bootstrap=boot,
    )
    fairness = fairness_table(scores, features, min_rows)
    if cfg.post_training_bias:
        bias = to_dict(params.bias)
        for (set_name, model), analysis in post_training_analyses(scores, bias).items():
            uri = storage.join(str(bias["out_dir"]), "post_training", set_name, model, "analysis.json")
            storage.write_json(uri, analysis, options)

    out_dir = str(cfg.out_dir)
    storage.write_json(
        storage.join(out_dir, "metrics.json"),
        {
            "protocol": str(params.prepare.protocol),
            "sets": {
                s.name: {
                    "split": str(cfg.sets[s.name].split),
                    "mix": str(cfg.sets[s.name].mix),
                    "role": s.role,
                    "rows": len(s.frame),
                    **(
                        {"rating_agreement": rating_agreement(s.frame)}
                        if str(cfg.sets[s.name].mix) == "human"
                        else {}
                    ),
                }
                for s in sets
            },
            "models": table,
        },
        options,
    )
    storage.write_json(storage.join(out_dir, "calibration.json"), {"models": calibration}, options)
    for (model, set_name), rows in reliability.items():
        uri = storage.join(str(cfg.live_dir), "plots", "reliability", f"{model}_{set_name}.csv")
        storage.write_bytes(uri, pd.DataFrame(rows).to_csv(index=False).encode(), options)
    storage.write_json(
        storage.join(out_dir, "fairness.json"),
        {"features": features, "min_group_rows": min_rows, "models": fairness},
        options,
    )
    storage.write_bytes(
        storage.join(out_dir, "comparison.csv"), comparison_frame(table).to_csv(index=False).encode(), options
    )
    storage.write_bytes(
        storage.join(out_dir, "predictions.parquet"),
        _parquet(predictions_frame(scores, ("review_id", "sentiment", *features))),
        options,
    )
    for model in scores.models:
        print(
            f"evaluate: {model}: "
            + "; ".join(_summary(table[model][s.name], fairness[model][s.name], s.name) for s in sets)
        )
        print(f"evaluate: {model}: {_served_summary(calibration[model])}")


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _served_summary(report: dict) -> str:
    ece, share = report["ece"]["test"], report["share_at_or_above_threshold"]
    served = "; ".join(
        f"{name} {v['accuracy']['value']:.4f} [{v['accuracy']['low']:.3f}, {v['accuracy']['high']:.3f}] / "
        f"{v['macro_f1']['value']:.4f} [{v['macro_f1']['low']:.3f}, {v['macro_f1']['high']:.3f}]"
        for name, v in report["served"].items()
    )
    return (
        f"T {report['calibration']['temperature']:.3f}, ECE {ece['before']:.4f} -> {ece['after']:.4f}, "
        f"at or above {report['review_threshold']:.2f}: {share['before']:.1%} -> {share['after']:.1%}; {served}"
    )


def _summary(row: dict, fairness: dict, set_name: str) -> str:
    gap = fairness["largest_gap"]
    gap_text = (
        f"largest group gap {gap['value']:.3f} ({gap['metric']} by {gap['feature']})"
        if gap
        else "no group large enough for a gap"
    )
    return f"{set_name} accuracy {row['accuracy']:.4f}, macro-F1 {row['macro_f1']:.4f}, {gap_text}"
