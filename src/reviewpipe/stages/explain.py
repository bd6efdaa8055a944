"""Stage `explain`: SHAP for the configured models on the prepared test split.

Writes `{out_dir}/index.html` (importance plots + highlighted reviews, readable offline) and, per
model, `{out_dir}/<model>/importance.json`, `reviews.json` and `importance.png` (local or s3://).
The explanations themselves are reviewpipe.evaluation.explain's.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from reviewpipe import storage
from reviewpipe.evaluation.explain import (
    ModelExplanation,
    explain_baseline,
    explain_text_model,
    importance_plot,
    page_section,
    render_html,
    sample_order,
)
from reviewpipe.models.predictors import configured_models
from reviewpipe.models.splits import prepared_dir, read_split
from reviewpipe.schema import ExplainParams
from reviewpipe.storage import StorageOptions


def main(params: DictConfig) -> None:
    cfg = ExplainParams.from_params(params)
    models = configured_models({"models": cfg.models, "model_paths": cfg.model_paths}, "explain")
    options = StorageOptions.from_params(params.get("storage"))
    data_dir = prepared_dir(params)
    test = read_split(data_dir, "test", options)
    order = sample_order(len(test), cfg.seed)

    sections = []
    for name, path in models.items():
        started = time.perf_counter()
        result = _explain(name, path, data_dir, test, order, cfg, options)
        out = storage.join(cfg.out_dir, name)
        storage.write_json(storage.join(out, "importance.json"), result.importance_document(), options)
        storage.write_json(storage.join(out, "reviews.json"), [r.to_dict() for r in result.reviews], options)
        plot = importance_plot(result.importance, f"{name}: top features per class", result.unit)
        storage.write_bytes(storage.join(out, "importance.png"), plot, options)
        sections.append(page_section(name, result))
        print(
            f"explain: {name}: {result.method} over {result.rows} reviews in {time.perf_counter() - started:.0f}s"
        )
    page = storage.join(cfg.out_dir, "index.html")
    storage.write_bytes(page, render_html(sections).encode("utf-8"), options)
    print(f"explain: wrote {page}")


def _explain(
    name: str,
    path: str,
    data_dir: str,
    test: pd.DataFrame,
    order: np.ndarray,
    cfg: ExplainParams,
    options: StorageOptions,
) -> ModelExplanation:
    if name == "baseline":
        from reviewpipe.models.baseline import load_model

        return explain_baseline(
            load_model(path),
            read_split(data_dir, "train", options),
            test,
            order,
            background_rows=cfg.background_rows,
            global_rows=cfg.global_rows,
            reviews=cfg.reviews,
            top_k=cfg.top_k,
            seed=cfg.seed,
        )
    from reviewpipe.models.predictors import load_predictor

    return explain_text_model(
        load_predictor(name, path),
        test,
        order,
        sample=cfg.bert_sample,
        reviews=cfg.reviews,
        top_k=cfg.top_k,
        max_evals=cfg.max_evals,
        batch_size=cfg.batch_size,
    )
