"""Bias plots and the offline HTML report: several Clarify analyses (e.g. before vs after
balancing) side by side, one bar chart per facet and metric, images embedded as base64."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # a bare Figure renders with Agg: no pyplot, no display

from reviewpipe.bias.clarify_report import SECTIONS, metrics_table
from reviewpipe.bias.pretraining import facet_column, positive_label_mask

# What a reader needs to read each number (Clarify's ranges; d = the facet value, a = the rest).
METRIC_HINTS = {
    "CI": "(n_a - n_d) / n; > 0: the facet value is under-represented. Range [-1, 1].",
    "DPL": "q_a - q_d, positive-label share of the rest minus that of the facet value. Range [-1, 1].",
    "KL": "KL(P_a || P_d) of the label distributions. >= 0.",
    "JS": "Jensen-Shannon divergence of the label distributions. [0, ln 2].",
    "LP": "L-p norm of P_a - P_d. >= 0.",
    "TVD": "Half the L1 distance of P_a and P_d. [0, 1].",
    "KS": "Largest |P_a(y) - P_d(y)|. [0, 1].",
    "CDDL": "Demographic disparity (share of d among negatives - among positives), averaged over the "
    "group variable's groups weighted by size. [-1, 1].",
}


def facet_counts(
    frame: pd.DataFrame, facets: Sequence[str], label: str, label_values: Sequence[Any]
) -> pd.DataFrame:
    """Rows and positive-label share per facet value: (facet, value_or_threshold, rows, positive_share)."""
    positive = positive_label_mask(frame[label], label_values).reset_index(drop=True)
    parts = []
    for facet in facets:
        grouped = positive.groupby(facet_column(frame[facet])).agg(["size", "mean"])
        parts.append(
            pd.DataFrame(
                {
                    "facet": facet,
                    "value_or_threshold": grouped.index.astype(str),
                    "rows": grouped["size"].to_numpy(),
                    "positive_share": grouped["mean"].to_numpy(),
                }
            )
        )
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["facet", "value_or_threshold", "rows", "positive_share"])
    )


def comparison_table(analyses: Mapping[str, dict[str, Any]], stage: str = "pre_training") -> pd.DataFrame:
    """Long table of every analysis: facet, value_or_threshold, metric, value, error, run (the key)."""
    frames = [metrics_table(analysis, stage).assign(run=run) for run, analysis in analyses.items()]
    return pd.concat(frames, ignore_index=True)


def metric_plot(table: pd.DataFrame, facet: str, metric: str, runs: Sequence[str]) -> bytes:
    """PNG: horizontal bars of one metric per facet value, one bar per run (before/after)."""
    rows = table[(table.facet == facet) & (table.metric == metric)]
    values = sorted(rows.value_or_threshold.unique())
    height = max(2.2, 0.2 * len(values) * max(1, len(runs)) + 1.0)
    fig = Figure(figsize=(6.4, height), dpi=80)
    ax = fig.add_subplot()
    bar = 0.8 / max(1, len(runs))
    y = np.arange(len(values))
    for i, run in enumerate(runs):
        by_value = rows[rows.run == run].set_index("value_or_threshold")["value"]
        heights = np.array([by_value.get(v, math.nan) for v in values], dtype=float)
        shown = np.where(np.isfinite(heights), heights, 0.0)
        ax.barh(y + (i - (len(runs) - 1) / 2) * bar, shown, height=bar, label=run.replace("_", " "))
        for yi, h in zip(y + (i - (len(runs) - 1) / 2) * bar, heights, strict=True):
            if not np.isfinite(h):  # an error or infinity: say so instead of drawing a zero bar
                ax.text(
                    0,
                    yi,
                    " n/a" if np.isnan(h) else (" +inf" if h > 0 else " -inf"),
                    va="center",
                    fontsize=7,
                    color="dimgray",
                )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, [str(v) for v in values], fontsize=8)
    ax.invert_yaxis()
    ax.set_title(f"{metric} by {facet} (each value vs the rest)", fontsize=10)
    ax.set_xlabel(metric)
    if len(runs) > 1:
        ax.legend(fontsize=8, loc="best")
    # a left margin sized to the longest label (tight_layout costs a second render)
    longest = max((len(str(v)) for v in values), default=1)
    fig.subplots_adjust(
        left=min(0.5, 0.05 + 0.011 * longest), right=0.97, top=1 - 0.45 / height, bottom=0.55 / height
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def metric_plots(table: pd.DataFrame, runs: Sequence[str]) -> dict[tuple[str, str], bytes]:
    """{(facet, metric): PNG bytes} for every facet and metric in the table."""
    return {
        (facet, metric): metric_plot(table, facet, metric, runs)
        for facet in table.facet.unique()
        for metric in sorted(table.metric.unique())
    }


def _fmt(value: float, error: Any) -> str:
    if isinstance(error, str) and error:
        return f'<span class="err" title="{html.escape(error)}">error</span>'
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{value:.4f}"


def render_html(
    analyses: Mapping[str, dict[str, Any]],
    plots: Mapping[tuple[str, str], bytes],
    counts: Mapping[str, pd.DataFrame] | None = None,
    stage: str = "pre_training",
    title: str = "Pre-training bias (SageMaker Clarify metrics)",
) -> str:
    """One self-contained page: per facet, a table with each metric's runs side by side, then the plots."""
    runs = list(analyses)
    table = comparison_table(analyses, stage)
    first = analyses[runs[0]][SECTIONS[stage]]
    esc = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>",
        "body{font-family:sans-serif;margin:1.5em;max-width:1400px}",
        "table{border-collapse:collapse;font-size:13px;margin:.5em 0 1em}",
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}",
        "th{background:#f2f2f2}td.k{text-align:left}.err{color:#b00;cursor:help}",
        ".plots{display:flex;flex-wrap:wrap;gap:8px}.plots img{border:1px solid #ddd}",
        "</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>Label <b>{esc(str(first['label']))}</b>, positive when in "
        f"<b>{esc(str(first['label_value_or_threshold']))}</b>. Each facet value (<i>d</i>) is compared "
        "with all other rows (<i>a</i>). Runs side by side: "
        + ", ".join(f"<b>{esc(r.replace('_', ' '))}</b>" for r in runs)
        + ". Definitions as in SageMaker "
        "Clarify (smclarify); hover an <span class='err'>error</span> to read why a metric was not computed.</p>",
        "<table><tr><th>metric</th><th>meaning</th></tr>",
        *(
            f"<tr><td class='k'>{esc(m)}</td><td class='k'>{esc(METRIC_HINTS.get(m, d))}</td></tr>"
            for m, d in table[["metric", "description"]]
            .drop_duplicates("metric")
            .sort_values("metric")
            .itertuples(index=False)
        ),
        "</table>",
    ]
    metric_names = sorted(table.metric.unique())
    for facet in table.facet.unique():
        rows = table[table.facet == facet]
        out.append(f"<h2>Facet: {esc(str(facet))}</h2><table><tr><th rowspan=2>value</th>")
        if counts:
            out.append(f"<th colspan={len(runs)}>rows</th><th colspan={len(runs)}>positive share</th>")
        out.extend(f"<th colspan={len(runs)}>{esc(m)}</th>" for m in metric_names)
        sub = "".join(f"<th>{esc(r.replace('_balancing', '').replace('_', ' '))}</th>" for r in runs)
        out.append("</tr><tr>" + sub * ((2 if counts else 0) + len(metric_names)) + "</tr>")
        for value in sorted(rows.value_or_threshold.unique()):
            cells = [f"<td class='k'>{esc(str(value))}</td>"]
            if counts:
                for column, fmt in (("rows", "{:.0f}"), ("positive_share", "{:.3f}")):
                    for run in runs:
                        c = counts.get(run)
                        hit = (
                            c[(c.facet == facet) & (c.value_or_threshold == value)] if c is not None else None
                        )
                        cells.append(
                            f"<td>{fmt.format(hit[column].iloc[0])}</td>"
                            if hit is not None and len(hit)
                            else "<td>–</td>"
                        )
            for metric in metric_names:
                for run in runs:
                    hit = rows[
                        (rows.value_or_threshold == value) & (rows.metric == metric) & (rows.run == run)
                    ]
                    cells.append(
                        "<td>–</td>"
                        if hit.empty
                        else f"<td>{_fmt(hit.value.iloc[0], hit.error.iloc[0])}</td>"
                    )
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</table><div class='plots'>")
        for metric in metric_names:
            png = plots.get((facet, metric))
            if png:
                out.append(
                    f"<img alt='{esc(metric)} by {esc(str(facet))}' "
                    f"src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"
                )
        out.append("</div>")
    out.append("</body></html>\n")
    return "\n".join(out)
