"""Stage `evaluate`: every configured model on every evaluation set (`evaluate.sets`: validation,
which may choose the champion, and test, which is only reported), through one prediction path.

Writes `{out_dir}/metrics.json` (models -> set -> metrics; the comparison table register chooses
from), `{out_dir}/comparison.csv`, `{out_dir}/fairness.json` (fairlearn, per group and the largest
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
from reviewpipe.evaluation.scoring import EvaluationSet, score_models
from reviewpipe.models.predictors import configured_models
from reviewpipe.models.splits import prepared_dir, read_split
from reviewpipe.storage import StorageOptions


def evaluation_sets(cfg: DictConfig, data_dir: str, options: StorageOptions) -> list[EvaluationSet]:
    """`evaluate.sets`: name -> {split: prepared split file, role: select | report}."""
    return [
        EvaluationSet(str(name), read_split(data_dir, str(spec.split), options), str(spec.role))
        for name, spec in cfg.sets.items()
    ]


def main(params: DictConfig) -> None:
    cfg = section(params, "evaluate")
    options = StorageOptions.from_params(params.get("storage"))
    models = configured_models(to_dict(cfg))
    sets = evaluation_sets(cfg, prepared_dir(params), options)
    if cfg.post_training_bias and "bias" not in params:
        raise ReviewpipeError(
            "evaluate.post_training_bias is on but params.yaml has no `bias` section; "
            "add conf/bias/ or set evaluate.post_training_bias=false."
        )
    features, min_rows = list(cfg.fairness.features), int(cfg.fairness.min_group_rows)

    scores = score_models(models, sets, int(cfg.batch_size))
    from dvclive import Live

    with Live(dir=str(cfg.live_dir), save_dvc_exp=False, dvcyaml=False, report=None) as live:
        table = metrics_table(scores, live)
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
                s.name: {"split": str(cfg.sets[s.name].split), "role": s.role, "rows": len(s.frame)}
                for s in sets
            },
            "models": table,
        },
        options,
    )
    storage.write_json(
        storage.join(out_dir, "fairness.json"),
        {"features": features, "min_group_rows": min_rows, "models": fairness},
        options,
    )
    storage.write_bytes(
        storage.join(out_dir, "comparison.csv"), comparison_frame(table).to_csv(index=False).encode(), options
    )
    storage.write_bytes(
        storage.join(out_dir, "predictions.parquet"), _parquet(predictions_frame(scores)), options
    )
    for model in scores.models:
        print(
            f"evaluate: {model}: "
            + "; ".join(_summary(table[model][s.name], fairness[model][s.name], s.name) for s in sets)
        )


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _summary(row: dict, fairness: dict, set_name: str) -> str:
    gap = fairness["largest_gap"]
    gap_text = (
        f"largest group gap {gap['value']:.3f} ({gap['metric']} by {gap['feature']})"
        if gap
        else "no group large enough for a gap"
    )
    return f"{set_name} accuracy {row['accuracy']:.4f}, macro-F1 {row['macro_f1']:.4f}, {gap_text}"
