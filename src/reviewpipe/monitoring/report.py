"""The monitoring report: one self-contained HTML page (plots inlined as base64 PNG, readable
offline) with the verdict, every check, and the baseline and batch distributions side by side."""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np

from reviewpipe.monitoring.constraints import Check
from reviewpipe.monitoring.drift import Comparison

BASELINE_COLOUR = "#4c72b0"
BATCH_COLOUR = "#dd8452"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def comparison_plot(comparison: Comparison) -> str:
    """Base64 PNG: shares per bucket/category (both numeric and categorical) and, for numeric
    features, the two CDFs from the quantile sketches."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    numeric = comparison.kind == "numeric" and comparison.baseline_sketch and comparison.batch_sketch
    fig, axes = plt.subplots(1, 2 if numeric else 1, figsize=(11 if numeric else 7, 3.6))
    bars = axes[0] if numeric else axes
    x = np.arange(len(comparison.labels))
    width = 0.4
    bars.bar(
        x - width / 2,
        comparison.shares(comparison.baseline_counts),
        width,
        label="baseline",
        color=BASELINE_COLOUR,
    )
    bars.bar(
        x + width / 2, comparison.shares(comparison.batch_counts), width, label="batch", color=BATCH_COLOUR
    )
    bars.set_xticks(x, comparison.labels, rotation=35, ha="right", fontsize=8)
    bars.set_ylabel("share")
    bars.set_title(f"{comparison.feature}: share per {'bucket' if numeric else 'value'}")
    bars.legend()
    if numeric:
        cdf = axes[1]
        for sketch, label, colour in (
            (comparison.baseline_sketch, "baseline", BASELINE_COLOUR),
            (comparison.batch_sketch, "batch", BATCH_COLOUR),
        ):
            cdf.step(sketch, np.linspace(0, 1, len(sketch)), where="post", label=label, color=colour)
        cdf.set_ylabel("cumulative share")
        cdf.set_xlabel(comparison.feature)
        cdf.set_title(f"{comparison.feature}: CDF (KS = largest vertical gap)")
        cdf.legend()
    return _png(fig)


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4g}"


def _checks_table(checks: list[Check]) -> str:
    rows = []
    for c in sorted(checks, key=lambda c: (not c.violated, c.feature_name)):
        status = '<td class="bad">VIOLATION</td>' if c.violated else '<td class="ok">ok</td>'
        op = ">" if c.comparison == "greater_than" else "<"
        rows.append(
            f"<tr>{status}<td>{html.escape(c.feature_name)}</td><td>{html.escape(c.constraint_check_type)}</td>"
            f"<td>{html.escape(c.metric)}</td><td class=num>{_fmt(c.value)}</td>"
            f"<td class=num>{op} {_fmt(c.threshold)} violates</td><td>{html.escape(c.description)}</td></tr>"
        )
    return (
        "<table><tr><th>status</th><th>feature</th><th>check</th><th>metric</th><th>value</th>"
        "<th>threshold</th><th>detail</th></tr>" + "".join(rows) + "</table>"
    )


def _numeric_summary(baseline: dict, batch: dict) -> str:
    rows = []
    for stats in baseline["features"]:
        if "numerical_statistics" not in stats:
            continue
        other = next((f for f in batch["features"] if f["name"] == stats["name"]), None)
        cells = []
        for source in (stats, other):
            body = (source or {}).get("numerical_statistics", {})
            q = body.get("quantiles", {})
            cells.append(
                f"<td class=num>{_fmt(body.get('mean'))}</td><td class=num>{_fmt(q.get('p50'))}</td>"
                f"<td class=num>{_fmt(q.get('p95'))}</td>"
            )
        rows.append(f"<tr><td>{html.escape(stats['name'])}</td>{''.join(cells)}</tr>")
    return (
        "<table><tr><th rowspan=2>feature</th><th colspan=3>baseline</th><th colspan=3>batch</th></tr>"
        "<tr><th>mean</th><th>median</th><th>p95</th><th>mean</th><th>median</th><th>p95</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def data_section(
    *,
    heading: str,
    source: str,
    baseline: dict,
    batch: dict,
    checks: list[Check],
    comparisons: list[Comparison],
    not_checked: dict[str, str] | None = None,
) -> str:
    """One batch's data-quality and drift results as an HTML fragment."""
    violated = [c for c in checks if c.violated]
    verdict = (
        f'<p class="verdict bad">{len(violated)} violation(s) of {len(checks)} checks</p>'
        if violated
        else f'<p class="verdict ok">No violations ({len(checks)} checks)</p>'
    )
    skipped = "".join(
        f"<li><code>{html.escape(name)}</code>: {html.escape(why)}</li>"
        for name, why in (not_checked or {}).items()
    )
    sections = []
    for comparison in comparisons:
        metrics = ", ".join(f"{k} = {_fmt(v)}" for k, v in comparison.metrics.items())
        sections.append(
            f"<h4>{html.escape(comparison.feature)}</h4><p class=metrics>{html.escape(metrics)}</p>"
            f'<img alt="{html.escape(comparison.feature)} distributions" '
            f'src="data:image/png;base64,{comparison_plot(comparison)}">'
        )
    return f"""<h2>{html.escape(heading)}</h2>
<p>Batch: <code>{html.escape(source)}</code> — {batch["dataset"]["item_count"]} rows;
baseline: {baseline["dataset"]["item_count"]} rows.</p>
{verdict}
{f"<p>Not checked:</p><ul>{skipped}</ul>" if skipped else ""}
<h3>Checks</h3>
{_checks_table(checks)}
<h3>Numeric features</h3>
{_numeric_summary(baseline, batch)}
<h3>Compared distributions</h3>
{"".join(sections) or "<p>No distributions compared.</p>"}
"""


def _figure(figure: dict | None) -> str:
    if figure is None:
        return "<td class=num>–</td>"
    low, high = figure["interval"]
    return f"<td class=num>{_fmt(figure['value'])} [{_fmt(low)}, {_fmt(high)}]</td>"


def _status(checks: list[dict]) -> str:
    if any(c["violated"] for c in checks):
        return '<td class="bad">VIOLATION</td>'
    if checks and not all(c["judged"] for c in checks):
        return "<td>too few rows</td>"
    return '<td class="ok">ok</td>' if checks else "<td>no threshold</td>"


def quality_section(report: dict) -> str:
    """Model quality per variant and window, and the A/B comparison, as an HTML fragment."""
    truth = report["ground_truth"]
    floors = report["thresholds"]
    rows = []
    for variant, body in report["variants"].items():
        overall = body["overall"]
        rows.append(
            f"<tr><td><b>{html.escape(variant)}</b></td><td>all</td><td class=num>{overall['n']}</td>"
            f"{_figure(overall['accuracy'])}{_figure(overall['macro_f1'])}{_status(overall['checks'])}</tr>"
        )
        for window in body["windows"]:
            rows.append(
                f"<tr><td>{html.escape(variant)}</td><td>{html.escape(window['start'])}</td>"
                f"<td class=num>{window['n']}</td>{_figure(window['accuracy'])}{_figure(window['macro_f1'])}"
                f"{_status(window['checks'])}</tr>"
            )
    ab_rows = [
        f"<tr><td>{html.escape(variant)}</td><td class=num>{c['n']}</td>"
        + (
            f"{_figure(c['accuracy_difference'])}{_figure(c['macro_f1_difference'])}"
            f"<td class=num>{_fmt(c['accuracy_fisher_p_value'])}</td>"
            if "accuracy_difference" in c
            else "<td>–</td><td>–</td><td>–</td>"
        )
        + f"<td>{html.escape(c['verdict'])}</td></tr>"
        for variant, c in report["ab"]["comparisons"].items()
    ]
    floor_text = (
        ", ".join(f"{k} &lt; {_fmt(v)}" for k, v in floors.items())
        if floors
        else "none (no baseline figures)"
    )
    return f"""<h2>Model quality (captured predictions joined with ground truth)</h2>
<p>{truth["joined_predictions"]} predictions have ground truth ({html.escape(json.dumps(truth["by_source"]))});
{truth["unlabelled_predictions"]} have none yet. Violation thresholds: {floor_text}
({html.escape(report["settings"]["comparison_method"])}; windows of {html.escape(report["settings"]["window"])};
intervals at {report["settings"]["confidence"]:.0%}).</p>
<table><tr><th>variant</th><th>window</th><th>n</th><th>accuracy</th><th>macro-F1</th><th>status</th></tr>
{"".join(rows)}</table>
<h3>A/B: each variant against {html.escape(str(report["ab"]["reference"]))}</h3>
<table><tr><th>variant</th><th>n</th><th>accuracy difference</th><th>macro-F1 difference</th>
<th>Fisher p</th><th>verdict</th></tr>{"".join(ab_rows) or "<tr><td colspan=6>one variant only</td></tr>"}</table>
"""


def render_page(*, title: str, generated_at: str, summary: str, fragments: list[str]) -> str:
    """The whole HTML page around the section fragments."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.bad {{ color: #b00020; font-weight: 600; }} .ok {{ color: #1b7f3b; }}
.verdict {{ font-size: 1.3rem; }} .metrics {{ color: #555; font-size: 0.9rem; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{summary} Generated {html.escape(generated_at)}.</p>
{"".join(fragments)}
</body></html>
"""
