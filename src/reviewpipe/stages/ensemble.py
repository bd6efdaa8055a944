"""Stage `ensemble`: score the member models on the natural-mix validation rows, cross-fit the
stacker there, and write `out_dir/stacker.json` (the final stacker + member paths),
`out_dir/validation_oof.parquet` (out-of-fold ensemble and member probabilities per review) and
the metrics file (validation scores of the ensemble, out-of-fold, beside each member's).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from reviewpipe import SENTIMENTS, storage
from reviewpipe.config import section, to_dict
from reviewpipe.evaluation.metrics import CLASS_NAMES, classification_metrics
from reviewpipe.evaluation.scoring import predict_in_batches
from reviewpipe.models.ensemble import OOF_FILE, STACKER_FILE, cross_fit, fit_stacker
from reviewpipe.models.predictors import load_predictor
from reviewpipe.models.splits import prepared_dir, read_split
from reviewpipe.storage import StorageOptions


def natural_validation(data_dir: str, options: StorageOptions | None = None) -> pd.DataFrame:
    """The validation split's rows before balancing (prepare's unbalanced.parquet): the natural mix."""
    rows = read_split(data_dir, "unbalanced", options)
    return rows[rows["split_type"] == "validation"].reset_index(drop=True)


def main(params: DictConfig) -> None:
    cfg = to_dict(section(params, "ensemble"))
    options = StorageOptions.from_params(params.get("storage"))
    data_dir = prepared_dir(params)
    rows = natural_validation(data_dir, options)
    balanced_ids = set(read_split(data_dir, "validation", options)["review_id"])
    members = list(cfg["members"])
    texts = rows["review_body"].fillna("").astype(str).tolist()
    categories = rows["product_category"].astype(str).tolist()
    proba = {}
    for name in members:
        predictor = load_predictor(name, cfg["model_paths"][name])
        proba[name] = predict_in_batches(predictor, texts, categories, int(cfg["batch_size"]))
        print(f"ensemble: scored {len(rows)} natural-mix validation rows with {name}", flush=True)
        del predictor
    truth = rows["label_id"].to_numpy(dtype=int)
    oof = cross_fit(proba, truth, members, C=float(cfg["C"]), folds=int(cfg["folds"]), seed=int(cfg["seed"]))
    stacker = fit_stacker(proba, truth, members, float(cfg["C"]))

    out_dir = cfg["out_dir"]
    storage.write_json(
        storage.join(out_dir, STACKER_FILE),
        {
            "stacker": stacker.to_json(),
            "member_paths": {m: str(cfg["model_paths"][m]) for m in members},
            "fitted_on": {
                "rows": int(len(rows)),
                "split": "validation (natural mix)",
                "folds": int(cfg["folds"]),
                "seed": int(cfg["seed"]),
            },
        },
        options,
    )
    table = rows[["review_id", "label_id"]].copy()
    for name, p in {"ensemble": oof, **proba}.items():
        for i, s in enumerate(SENTIMENTS):
            table[f"{name}_p_{CLASS_NAMES[s]}"] = p[:, i]
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    storage.write_bytes(storage.join(out_dir, OOF_FILE), buffer.getvalue(), options)

    balanced = rows["review_id"].isin(balanced_ids).to_numpy()
    metrics = {"rows": {"natural": int(len(rows)), "balanced": int(balanced.sum())}, "models": {}}
    for name, p in {"ensemble": oof, **proba}.items():
        scores = {}
        for view, mask in (("natural", np.ones(len(rows), dtype=bool)), ("balanced", balanced)):
            m = classification_metrics(truth[mask], p[mask])
            scores[view] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
        metrics["models"][name] = scores
        print(
            f"ensemble: validation {name}{' (out-of-fold)' if name == 'ensemble' else ''}: natural "
            f"{scores['natural']['accuracy']:.4f} / {scores['natural']['macro_f1']:.4f}, balanced "
            f"{scores['balanced']['accuracy']:.4f} / {scores['balanced']['macro_f1']:.4f} (accuracy / macro-F1)"
        )
    storage.write_json(cfg["metrics_path"], metrics, options)
