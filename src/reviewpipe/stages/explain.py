"""Stage `explain`: SHAP for the configured models on the prepared test split.

Writes `{out_dir}/index.html` (importance plots + highlighted reviews, readable offline) and, per
model, `{out_dir}/<model>/importance.json`, `reviews.json` and `importance.png`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from reviewpipe import storage
from reviewpipe.config import section, to_dict
from reviewpipe.errors import ReviewpipeError
from reviewpipe.evaluation.explain import (
    explain_baseline_reviews,
    global_importance,
    importance_plot,
    linear_explainer,
    partition_explanations,
    render_html,
    token_importance,
)
from reviewpipe.evaluation.metrics import CLASS_NAMES
from reviewpipe.models.predictors import configured_models
from reviewpipe.models.splits import prepared_dir, read_split
from reviewpipe.storage import StorageOptions

SUPPORTED = ("baseline", "bert")


def sample_order(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of the test rows: every model explains a prefix of the same order."""
    return np.random.default_rng(seed).permutation(n)


def explain_baseline(
    path: str, train: pd.DataFrame, test: pd.DataFrame, order: np.ndarray, cfg: dict[str, Any]
) -> dict[str, Any]:
    from reviewpipe.models.baseline import load_model

    model = load_model(path)
    background = train["review_body"].fillna("").astype(str)
    rows = int(cfg.get("background_rows") or len(background))
    background = background.sample(min(rows, len(background)), random_state=int(cfg.get("seed", 42)))
    explainer = linear_explainer(model, background.tolist())
    texts = test["review_body"].fillna("").astype(str).tolist()
    global_rows = cfg.get("global_rows")
    global_texts = [texts[i] for i in (order[: int(global_rows)] if global_rows else order)]
    top_k = int(cfg.get("top_k", 20))
    importance = {
        "word": global_importance(explainer, model, global_texts, top_k, analyzer="word"),
        "char": global_importance(explainer, model, global_texts, top_k, analyzer="char"),
    }
    shown = order[: int(cfg.get("reviews", 20))]
    reviews = explain_baseline_reviews(
        explainer,
        model,
        [texts[i] for i in shown],
        observed=[CLASS_NAMES[int(s)] for s in test["sentiment"].iloc[shown]],
    )
    return {
        "method": "LinearExplainer (TF-IDF n-grams, per-class margin)",
        "unit": "log-odds",
        "importance": importance["word"],
        "extra": {"char_ngrams": importance["char"]},
        "reviews": reviews,
        "rows": len(global_texts),
    }


def explain_bert(path: str, test: pd.DataFrame, order: np.ndarray, cfg: dict[str, Any]) -> dict[str, Any]:
    from reviewpipe.models.predictors import load_predictor

    predictor = load_predictor("bert", path)
    sample = order[: int(cfg.get("bert_sample", 50))]
    texts = test["review_body"].fillna("").astype(str).iloc[sample].tolist()
    reviews, raw = partition_explanations(
        predictor.predict_proba,
        predictor.tokenizer,
        texts,
        max_evals=int(cfg.get("max_evals", 300)),
        batch_size=int(cfg.get("batch_size", 32)),
        observed=[CLASS_NAMES[int(s)] for s in test["sentiment"].iloc[sample]],
    )
    return {
        "method": "Partition explainer, Text masker (class probabilities)",
        "unit": "probability",
        "importance": token_importance(raw, int(cfg.get("top_k", 20))),
        "extra": {},
        "reviews": reviews[: int(cfg.get("reviews", 20))],
        "all_reviews": reviews,
        "rows": len(texts),
    }


def main(params: DictConfig) -> None:
    cfg = to_dict(section(params, "explain"))
    unsupported = [m for m in cfg.get("models") or [] if m not in SUPPORTED]
    if unsupported:
        raise ReviewpipeError(f"explain.models {unsupported} unsupported; choose from {list(SUPPORTED)}.")
    models = configured_models(cfg, "explain")
    options = StorageOptions.from_params(params.get("storage"))
    data_dir = prepared_dir(params)
    test = read_split(data_dir, "test", options)
    order = sample_order(len(test), int(cfg.get("seed", 42)))
    out_dir = cfg.get("out_dir", "reports/explain")
    os.makedirs(out_dir, exist_ok=True)

    sections = []
    for name, path in models.items():
        started = time.perf_counter()
        if name == "baseline":
            result = explain_baseline(path, read_split(data_dir, "train", options), test, order, cfg)
        else:
            result = explain_bert(path, test, order, cfg)
        model_dir = os.path.join(out_dir, name)
        os.makedirs(model_dir, exist_ok=True)
        storage.write_json(
            os.path.join(model_dir, "importance.json"),
            {
                "method": result["method"],
                "unit": result["unit"],
                "rows": result["rows"],
                "top": result["importance"],
                **result["extra"],
            },
        )
        storage.write_json(
            os.path.join(model_dir, "reviews.json"),
            [r.to_dict() for r in result.get("all_reviews", result["reviews"])],
        )
        with open(os.path.join(model_dir, "importance.png"), "wb") as f:
            f.write(importance_plot(result["importance"], f"{name}: top features per class", result["unit"]))
        sections.append(
            {
                "model": name,
                "method": result["method"],
                "unit": result["unit"],
                "plot": f"{name}/importance.png",
                "reviews": result["reviews"],
                "note": f"Importance over {result['rows']} test reviews; SHAP values in {result['unit']}.",
            }
        )
        print(
            f"explain: {name}: {result['method']} over {result['rows']} reviews in "
            f"{time.perf_counter() - started:.0f}s"
        )
    with open(os.path.join(out_dir, "index.html"), "w", encoding="utf-8") as f:
        f.write(render_html(sections))
    print(f"explain: wrote {os.path.join(out_dir, 'index.html')}")
