"""Stage `bias` end to end on small prepared parquet files: analysis.json before/after balancing,
plots, the offline HTML report; and the report helpers on their own."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from reviewpipe.bias.clarify_report import metrics_table, validate_analysis
from reviewpipe.bias.report import comparison_table, facet_counts, metric_plot, render_html
from reviewpipe.cli import main as cli_main
from reviewpipe.errors import ReviewpipeError
from reviewpipe.stages import bias as bias_stage

FACETS = ["product_category", "age_band", "division_name"]


def _prepared_frame(n: int, seed: int, balanced: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    category = rng.choice(["Blouses", "Dresses", "Knits"], n, p=[0.5, 0.3, 0.2])
    # before balancing: Dresses skew positive; after: sentiments equal
    p = [1 / 3] * 3 if balanced else [0.1, 0.2, 0.7]
    sentiment = rng.choice([-1, 0, 1], n, p=p)
    age = rng.integers(18, 80, n)
    band = pd.cut(
        age,
        [0, 25, 35, 45, 55, 65, 200],
        right=False,
        labels=["<25", "25-34", "35-44", "45-54", "55-64", "65+"],
    ).astype(str)
    return pd.DataFrame(
        {
            "review_id": [f"r{seed}-{i}" for i in range(n)],
            "review_body": "text",
            "product_category": category,
            "division_name": rng.choice(["General", "General Petite"], n),
            "department_name": "Tops",
            "age": age,
            "age_band": band,
            "sentiment": sentiment,
            "label_id": sentiment + 1,
            "split_type": "train",
        }
    )


def _params(tmp_path: Path, facets: list[str] = FACETS, metrics: list[str] | None = None) -> OmegaConf:
    return OmegaConf.create(
        {
            "storage": {"endpoint_url": None, "profile": None, "region": None},
            "bias": {
                "label": "sentiment",
                "label_values": [1],
                "predicted_label": "predicted_sentiment",
                "facets": facets,
                "group_variable": "age_band",
                "lp_p": 2,
                "pre_training_metrics": metrics or ["CDDL", "CI", "DPL", "JS", "KL", "KS", "LP", "TVD"],
                "prepared_dir": str(tmp_path / "prepared"),
                "out_dir": str(tmp_path / "reports" / "bias"),
            },
        }
    )


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    out = tmp_path / "prepared"
    out.mkdir()
    _prepared_frame(400, 1, balanced=False).to_parquet(out / "unbalanced.parquet", index=False)
    for seed, split in enumerate(("train", "validation", "test"), start=2):
        _prepared_frame({"train": 90, "validation": 6, "test": 6}[split], seed, balanced=True).assign(
            split_type=split
        ).to_parquet(out / f"{split}.parquet", index=False)
    return out


def test_stage_writes_clarify_analyses_plots_and_html(tmp_path: Path, prepared: Path) -> None:
    bias_stage.main(_params(tmp_path))
    out = tmp_path / "reports" / "bias"
    before = json.loads((out / "pre_training" / "before_balancing" / "analysis.json").read_text())
    after = json.loads((out / "pre_training" / "after_balancing" / "analysis.json").read_text())
    for analysis in (before, after):
        validate_analysis(analysis)
        assert set(analysis["pre_training_bias_metrics"]["facets"]) == set(FACETS)
    # the values are the ones computed from the parquet the stage read
    unbalanced = pd.read_parquet(prepared / "unbalanced.parquet")
    dresses = unbalanced.product_category == "Dresses"
    table = metrics_table(before).set_index(["facet", "value_or_threshold", "metric"])["value"]
    assert table["product_category", "Dresses", "CI"] == pytest.approx(
        (len(unbalanced) - 2 * dresses.sum()) / len(unbalanced)
    )
    positive = unbalanced.sentiment == 1
    assert table["product_category", "Dresses", "DPL"] == pytest.approx(
        positive[~dresses].mean() - positive[dresses].mean()
    )
    after_rows = sum(len(pd.read_parquet(prepared / f"{s}.parquet")) for s in ("train", "validation", "test"))
    after_table = metrics_table(after)
    blouses_ci = after_table[(after_table.value_or_threshold == "Blouses") & (after_table.metric == "CI")]
    n_d = sum(
        (pd.read_parquet(prepared / f"{s}.parquet").product_category == "Blouses").sum()
        for s in ("train", "validation", "test")
    )
    assert blouses_ci.value.iloc[0] == pytest.approx((after_rows - 2 * n_d) / after_rows)

    plots = sorted(
        p.relative_to(out / "pre_training" / "plots").as_posix()
        for p in (out / "pre_training" / "plots").rglob("*.png")
    )
    assert len(plots) == len(FACETS) * 8 and "product_category/CI.png" in plots
    page = (out / "index.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == len(FACETS) * 8
    assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page  # readable offline
    assert "before" in page and "after" in page and "Dresses" in page


def test_stage_reruns_are_byte_identical(tmp_path: Path, prepared: Path) -> None:
    """analysis.json, plots and index.html derive from the data and params, not the clock."""
    out = tmp_path / "reports" / "bias"
    bias_stage.main(_params(tmp_path))
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    bias_stage.main(_params(tmp_path))
    second = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert len(first) > 10 and first == second


def test_stage_reruns_cleanly_when_facets_change(tmp_path: Path, prepared: Path) -> None:
    params = _params(tmp_path, ["product_category", "division_name"], ["CI"])
    bias_stage.main(params)
    params.bias.facets = ["division_name"]
    bias_stage.main(params)
    plots = tmp_path / "reports" / "bias" / "pre_training" / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["division_name"]


def test_missing_prepared_data_is_a_clear_cli_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    params_file = tmp_path / "params.yaml"
    OmegaConf.save(_params(tmp_path), params_file)
    assert cli_main(["stage", "bias", "--params", str(params_file)]) == 2
    err = capsys.readouterr().err
    assert "unbalanced.parquet not found" in err and "dvc repro prepare" in err


def test_bad_facet_name_is_a_clear_error(tmp_path: Path, prepared: Path) -> None:
    params = _params(tmp_path)
    params.bias.facets = ["colour"]
    with pytest.raises(ReviewpipeError, match=r"\['colour'\].*bias.facets"):
        bias_stage.main(params)


def test_stage_reads_prepared_data_from_s3(
    tmp_path: Path, prepared: Path, s3_bucket: str, moto_server: str
) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_server})
    for p in prepared.iterdir():
        fs.put(str(p), f"{s3_bucket}/prepared/{p.name}")
    params = _params(tmp_path, ["division_name"], ["CI", "DPL"])
    params.bias.prepared_dir = f"s3://{s3_bucket}/prepared"
    params.storage.endpoint_url = moto_server
    bias_stage.main(params)
    assert (tmp_path / "reports" / "bias" / "pre_training" / "after_balancing" / "analysis.json").exists()


def test_html_marks_errors_and_counts() -> None:
    frame = pd.DataFrame({"f": ["x", "x", "y", "y", "y"], "s": [1, 1, 1, -1, 0]})
    from reviewpipe.bias.pretraining import pre_training_report

    params = {"label": "s", "label_values": [1], "facets": ["f"]}
    analyses = {
        "before_balancing": pre_training_report(frame, params),
        "after_balancing": pre_training_report(frame.iloc[::-1], params),
    }
    counts = {run: facet_counts(frame, ["f"], "s", [1]) for run in analyses}
    assert counts["before_balancing"].to_dict("records")[0] == {
        "facet": "f",
        "value_or_threshold": "x",
        "rows": 2,
        "positive_share": 1.0,
    }
    page = render_html(analyses, {}, counts)
    assert 'class="err" title="facet d has no rows with a negative label' in page
    assert "group variable is empty or not provided" in page  # CDDL without a group variable
    png = metric_plot(comparison_table(analyses), "f", "KL", list(analyses))
    assert png[:4] == b"\x89PNG"
