"""Stage `catalog`: crawl the lake into DuckDB views (`reviews` = current versions, `reviews_history`,
`rejects`) and a JSON description; with catalog.engine=athena also register the S3 lake in the Glue
Data Catalog (tables + partitions)."""

from __future__ import annotations

from omegaconf import DictConfig

from reviewpipe.data.catalog import publish_catalog


def main(params: DictConfig) -> None:
    description = publish_catalog(params)
    for name, table in description["tables"].items():
        parts = table["partitions"]
        where = f", {len(parts['values'])} partitions by {parts['column']}" if parts else ""
        versions = f" ({table['versions']} with versions)" if "versions" in table else ""
        print(
            f"catalog: {name}: {table['rows']} rows{versions}, {table['files']} files{where} ({table['location']})"
        )
