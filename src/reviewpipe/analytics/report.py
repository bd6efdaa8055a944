"""The EDA report: one self-contained HTML page (tables, SQL, base64 PNG plots) readable offline."""

from __future__ import annotations

import base64
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

MAX_TABLE_ROWS = 100

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("reviewpipe.analytics", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
)


def render_report(
    queries: dict[str, str],
    results: dict[str, pd.DataFrame],
    plots: dict[str, tuple[str, bytes]],
    catalog: dict[str, Any] | None = None,
    result_files: dict[str, str] | None = None,
    skipped: list[str] | None = None,
    title: str = "Reviews: exploratory data analysis",
) -> str:
    """HTML for the report. `result_files` names where each full result was saved. The page derives
    from its inputs only (no clock): the same catalog and queries give the same bytes."""
    sections = []
    for name, sql in queries.items():
        frame = results[name]
        shown = frame.head(MAX_TABLE_ROWS)
        sections.append(
            {
                "name": name,
                "sql": sql.strip(),
                "table": Markup(shown.to_html(index=False, na_rep="NULL", float_format=_fmt, border=0)),
                "rows": len(frame),
                "shown": len(shown),
                "truncated": len(frame) > len(shown),
                "file": (result_files or {}).get(name, ""),
            }
        )
    return _ENV.get_template("explore_report.html").render(
        title=title,
        data_as_of=data_as_of(catalog),
        database=(catalog or {}).get("database"),
        tables=(catalog or {}).get("tables", {}),
        plots={
            name: (caption, base64.b64encode(png).decode("ascii")) for name, (caption, png) in plots.items()
        },
        skipped=skipped or [],
        queries=sections,
    )


def data_as_of(catalog: dict[str, Any] | None) -> str | None:
    """The newest `created_at` (a table's last batch's ingested_at) in a catalog description."""
    stamps = [t["created_at"] for t in (catalog or {}).get("tables", {}).values() if t.get("created_at")]
    return max(stamps) if stamps else None


def _fmt(value: float) -> str:
    return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
