"""Stage `catalog`: crawl the lake into DuckDB views (`reviews`, `rejects`) and a JSON description."""

from __future__ import annotations

from omegaconf import DictConfig

from reviewpipe import storage
from reviewpipe.config import section
from reviewpipe.data.catalog import build_catalog
from reviewpipe.storage import StorageOptions


def main(params: DictConfig) -> None:
    cfg = section(params, "catalog")
    description = build_catalog(
        section(params, "lake").uri, cfg.database, StorageOptions.from_params(params.get("storage"))
    )
    description["database"] = cfg.database
    storage.write_json(cfg.description, description)
    for name, table in description["tables"].items():
        parts = table["partitions"]
        where = f", {len(parts['values'])} partitions by {parts['column']}" if parts else ""
        print(f"catalog: {name}: {table['rows']} rows, {table['files']} files{where} ({table['location']})")
