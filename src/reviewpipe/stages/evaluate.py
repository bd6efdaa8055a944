"""Stage `evaluate`: every configured model on the same prepared test split.

Writes `{out_dir}/metrics.json` (the comparison table), `{out_dir}/comparison.csv`,
`{out_dir}/fairness.json` (fairlearn, per group and the largest gaps), `{out_dir}/predictions.parquet`,
DVCLive metrics and plots under `live_dir`, and Clarify's post-training analysis.json per model
under `{bias.out_dir}/post_training/<model>/`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from reviewpipe import SENTIMENTS, storage
from reviewpipe.config import section, to_dict
from reviewpipe.errors import ReviewpipeError
from reviewpipe.evaluation.fairness import fairness_report
from reviewpipe.evaluation.metrics import CLASS_NAMES, log_to_live
from reviewpipe.models.predictors import Predictor, configured_models, load_predictor
from reviewpipe.models.splits import prepared_dir, read_split
from reviewpipe.storage import StorageOptions

PREDICTED = "predicted_sentiment"


def predict_in_batches(
    predictor: Predictor, texts: Sequence[str], categories: Sequence[str] | None, batch_size: int
) -> np.ndarray:
    parts = [
        predictor.predict_proba(
            list(texts[i : i + batch_size]),
            None if categories is None else list(categories[i : i + batch_size]),
        )
        for i in range(0, len(texts), batch_size)
    ]
    return np.vstack(parts) if parts else np.zeros((0, len(SENTIMENTS)))


def comparison_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What metrics.json keeps per model: headline numbers and per-class precision/recall/F1."""
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "roc_auc_ovr_macro", "per_class")}


def main(params: DictConfig) -> None:
    cfg = to_dict(section(params, "evaluate"))
    options = StorageOptions.from_params(params.get("storage"))
    models = configured_models(cfg)
    test = read_split(prepared_dir(params), "test", options)
    texts = test["review_body"].fillna("").astype(str).tolist()
    categories = test["product_category"].astype(str).tolist() if "product_category" in test else None
    fairness_cfg = cfg.get("fairness", {}) or {}
    features = list(fairness_cfg.get("features", ["product_category", "age_band"]))
    min_rows = int(fairness_cfg.get("min_group_rows", 1))
    bias_cfg = to_dict(params.get("bias")) if cfg.get("post_training_bias", True) else None
    if cfg.get("post_training_bias", True) and not bias_cfg:
        raise ReviewpipeError(
            "evaluate.post_training_bias is on but params.yaml has no `bias` section; "
            "add conf/bias/ or set evaluate.post_training_bias=false."
        )

    from dvclive import Live

    out_dir = cfg.get("out_dir", "reports/evaluate")
    table: dict[str, Any] = {}
    fairness: dict[str, Any] = {}
    predictions = test[[c for c in ("review_id", "sentiment") if c in test.columns]].copy()
    with Live(
        dir=cfg.get("live_dir", f"{out_dir}/live"), save_dvc_exp=False, dvcyaml=False, report=None
    ) as live:
        for name, path in models.items():
            proba = predict_in_batches(
                load_predictor(name, path), texts, categories, int(cfg.get("batch_size", 256))
            )
            metrics = log_to_live(live, name, test["label_id"].to_numpy(), proba)
            table[name] = comparison_row(metrics)
            scored = test.assign(**{PREDICTED: np.asarray(SENTIMENTS)[proba.argmax(axis=1)]})
            scored["predicted_label_id"] = proba.argmax(axis=1)
            fairness[name] = fairness_report(scored, "label_id", "predicted_label_id", features, min_rows)
            if bias_cfg:
                write_post_training_bias(scored, name, bias_cfg, options)
            predictions[f"{name}_predicted"] = scored[PREDICTED].to_numpy()
            for i, s in enumerate(SENTIMENTS):
                predictions[f"{name}_p_{CLASS_NAMES[s]}"] = proba[:, i]
            gap = fairness[name]["largest_gap"]
            gap_text = (
                f"largest group gap {gap['value']:.3f} ({gap['metric']} by {gap['feature']})"
                if gap
                else "no group large enough for a gap"
            )
            print(
                f"evaluate: {name}: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
                f"{gap_text}"
            )

    protocol = (params.get("prepare") or {}).get("protocol", "unknown")
    storage.write_json(
        storage.join(out_dir, "metrics.json"),
        {"protocol": protocol, "test_rows": int(len(test)), "models": table},
        options,
    )
    storage.write_json(
        storage.join(out_dir, "fairness.json"),
        {"features": features, "min_group_rows": min_rows, "models": fairness},
        options,
    )
    pd.DataFrame(
        [
            {
                "model": m,
                **{k: v for k, v in row.items() if k != "per_class"},
                **{f"{c}_f1": row["per_class"][c]["f1"] for c in row["per_class"]},
            }
            for m, row in table.items()
        ]
    ).to_csv(storage.join(out_dir, "comparison.csv"), index=False)
    predictions.to_parquet(storage.join(out_dir, "predictions.parquet"), index=False)


def write_post_training_bias(
    scored: pd.DataFrame, model: str, bias_cfg: Mapping[str, Any], options: StorageOptions | None = None
) -> None:
    """Clarify's post-training analysis.json for one model's test predictions."""
    from reviewpipe.bias.posttraining import post_training_report

    analysis = post_training_report(scored, {**bias_cfg, "predicted_label": PREDICTED})
    out = storage.join(bias_cfg.get("out_dir", "reports/bias"), "post_training", model, "analysis.json")
    storage.write_json(out, analysis, options)
