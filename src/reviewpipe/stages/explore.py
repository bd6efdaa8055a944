"""Stage `explore`: every sql/*.sql over the catalog → results, plots and reports/explore/index.html."""

from __future__ import annotations

from omegaconf import DictConfig

from reviewpipe import storage
from reviewpipe.analytics.explore import load_queries, query_catalog, write_results
from reviewpipe.analytics.plots import make_plots
from reviewpipe.analytics.report import render_report
from reviewpipe.config import section


def main(params: DictConfig) -> None:
    cfg = section(params, "explore")
    out_dir = cfg.out_dir
    queries = load_queries(cfg.sql_dir)
    results = query_catalog(params, queries)

    fs, path = storage.get_fs(out_dir)
    if fs.exists(path):  # stale results of deleted queries must not linger
        fs.rm(path, recursive=True)
    files = write_results(results, storage.join(out_dir, "results"), cfg.result_format)
    plots, skipped = make_plots(results)
    for name, (_, png) in plots.items():
        storage.write_bytes(storage.join(out_dir, "plots", f"{name}.png"), png)

    description_uri = section(params, "catalog").description
    catalog = storage.read_json(description_uri) if storage.exists(description_uri) else None
    html = render_report(
        queries,
        results,
        plots,
        catalog,
        skipped=skipped,
        result_files={name: f"results/{name}.{cfg.result_format}" for name in results},
    )
    storage.write_text(storage.join(out_dir, "index.html"), html)
    print(
        f"explore: {len(results)} queries, {len(plots)} plots → {storage.join(out_dir, 'index.html')}"
        f" (results: {len(files)} {cfg.result_format} files)"
    )
