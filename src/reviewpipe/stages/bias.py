"""Stage `bias`: SageMaker Clarify pre-training bias on the prepared data, before and after balancing.

Reads `{prepared_dir}/unbalanced.parquet` (before balancing) and the union of
`{prepared_dir}/{train,validation,test}.parquet` (after balancing); writes
`{out_dir}/pre_training/{before,after}_balancing/analysis.json` (Clarify's layout), one plot per
facet and metric under `{out_dir}/pre_training/plots/`, and `{out_dir}/index.html`.
"""

from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from reviewpipe import storage
from reviewpipe.bias.pretraining import pre_training_report
from reviewpipe.bias.report import comparison_table, facet_counts, metric_plots, render_html
from reviewpipe.config import section, to_dict

SPLITS = ("train", "validation", "test")
RUNS = ("before_balancing", "after_balancing")


PREPARE_HINT = "Run the prepare stage first (`dvc repro prepare`)."


def load_datasets(prepared_dir: str, options: storage.StorageOptions) -> dict[str, pd.DataFrame]:
    """{"before_balancing": unbalanced rows, "after_balancing": train + validation + test}."""
    before = storage.read_parquet(
        storage.join(prepared_dir, "unbalanced.parquet"), options, hint=PREPARE_HINT
    )
    after = pd.concat(
        [
            storage.read_parquet(storage.join(prepared_dir, f"{split}.parquet"), options, hint=PREPARE_HINT)
            for split in SPLITS
        ],
        ignore_index=True,
    )
    return {"before_balancing": before, "after_balancing": after}


def main(params: DictConfig) -> None:
    cfg = to_dict(section(params, "bias"))
    options = storage.StorageOptions.from_params(params.get("storage"))
    datasets = load_datasets(cfg["prepared_dir"], options)

    analyses = {run: pre_training_report(datasets[run], cfg) for run in RUNS}
    counts = {
        run: facet_counts(datasets[run], cfg["facets"], cfg["label"], cfg["label_values"]) for run in RUNS
    }

    out_dir = cfg["out_dir"]
    pre_dir = storage.join(out_dir, "pre_training")
    fs, pre_path = storage.get_fs(pre_dir, options)
    if fs.exists(pre_path):  # our declared output: start clean so no stale facet plots remain
        fs.rm(pre_path, recursive=True)
    for run, analysis in analyses.items():
        storage.write_json(storage.join(pre_dir, run, "analysis.json"), analysis, options)

    plots = metric_plots(comparison_table(analyses), list(RUNS))
    for (facet, metric), png in plots.items():
        storage.write_bytes(storage.join(pre_dir, "plots", str(facet), f"{metric}.png"), png, options)
    page = render_html(analyses, plots, counts)
    storage.write_text(storage.join(out_dir, "index.html"), page, options)
    rows = {run: len(frame) for run, frame in datasets.items()}
    print(f"bias: {rows} rows; {len(plots)} plots; wrote {pre_dir} and {storage.join(out_dir, 'index.html')}")
