"""Stage `catalog`: crawl the lake into DuckDB views (`reviews` = current versions, `reviews_history`,
`rejects`) and a JSON description; with catalog.engine=athena also register the S3 lake in the Glue
Data Catalog (tables + partitions)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from reviewpipe import storage
from reviewpipe.config import section
from reviewpipe.data.catalog import build_catalog, check_engine
from reviewpipe.storage import StorageOptions


def publish_catalog(params: Any) -> dict[str, Any]:
    """Build the catalog `params` name (catalog.database) over lake.uri and write its description
    (catalog.description); with catalog.engine=athena also register the S3 lake in the Glue Data
    Catalog (reviewpipe.aws.glue). Returns the description."""
    cfg = section(params, "catalog")
    engine = check_engine(cfg.engine)
    lake_uri = section(params, "lake").uri
    options = StorageOptions.from_params(params.get("storage"))
    if engine == "athena":
        from reviewpipe.aws.glue import s3_location

        s3_location(lake_uri)  # fails early, before the local catalog is built, when the lake is local
    description = build_catalog(lake_uri, cfg.database, options)
    description["database"] = cfg.database
    description["engine"] = engine
    if engine == "athena":
        from reviewpipe.aws.clients import Aws, AwsSettings
        from reviewpipe.aws.glue import sync_lake

        glue = Aws(AwsSettings.from_params(section(params, "aws"))).client("glue")
        description["glue"] = sync_lake(glue, cfg.athena.database, lake_uri, options)
    storage.write_json(cfg.description, description)
    return description


def main(params: DictConfig) -> None:
    description = publish_catalog(params)
    for name, table in description["tables"].items():
        parts = table["partitions"]
        where = f", {len(parts['values'])} partitions by {parts['column']}" if parts else ""
        versions = f" ({table['versions']} with versions)" if "versions" in table else ""
        print(
            f"catalog: {name}: {table['rows']} rows{versions}, {table['files']} files{where} ({table['location']})"
        )
