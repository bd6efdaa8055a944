"""Quality gate, model registry (local and S3 on moto), the `register` stage and `reviewpipe registry`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from reviewpipe import registry
from reviewpipe.cli import main as cli_main
from reviewpipe.errors import ReviewpipeError
from reviewpipe.stages import register as register_stage

ROOT = Path(__file__).resolve().parents[1]

VALIDATION = {
    "baseline": {"accuracy": 0.70, "macro_f1": 0.69},
    "automl": {"accuracy": 0.90, "macro_f1": 0.90},
    "bert": {"accuracy": 0.78, "macro_f1": 0.77},
}
# On test the baseline wins: a gate that looked at test would pick it.
TEST = {
    "baseline": {"accuracy": 0.82, "macro_f1": 0.81},
    "automl": {"accuracy": 0.70, "macro_f1": 0.70},
    "bert": {"accuracy": 0.75, "macro_f1": 0.74},
}
METRICS = {
    "protocol": "course",
    "sets": {
        "validation": {"split": "validation", "role": "select", "rows": 100},
        "test": {"split": "test", "role": "report", "rows": 100},
    },
    "models": {m: {"validation": VALIDATION[m], "test": TEST[m]} for m in VALIDATION},
}
BERT_GAPS = {
    "product_category": {"largest_gap": {"accuracy": 0.08, "macro_f1": 0.12}},
    "age_band": {"largest_gap": {"accuracy": 0.04}},
    "groups": {"Dresses": {"accuracy": 0.9}},
}
FAIRNESS = {
    "models": {
        "baseline": {
            "validation": {"product_category": {"largest_gap": {"accuracy": 0.05}}},
            "test": {"product_category": {"largest_gap": {"accuracy": 0.01}}},
        },
        "bert": {"validation": BERT_GAPS, "test": {"product_category": {"largest_gap": {"accuracy": 0.5}}}},
    }
}
SELECTED, SELECTED_FAIRNESS = registry.selection_view(METRICS, FAIRNESS, "validation")


def test_gate_picks_champion_among_candidates_and_passes() -> None:
    decision = registry.evaluate_gate(
        SELECTED, SELECTED_FAIRNESS, "macro_f1", 0.6, 0.2, candidates=["bert", "baseline"]
    )
    assert decision.champion == "bert"  # automl scores higher but is not a candidate
    assert decision.metric_value == pytest.approx(0.77)
    assert decision.fairness_gap == pytest.approx(0.12)  # only numbers under a *gap* key count
    assert decision.passed and decision.reasons == ()
    assert [m for m, _ in decision.ranking] == ["bert", "baseline"]


def test_gate_rejects_low_metric_and_wide_gap_with_reasons() -> None:
    decision = registry.evaluate_gate(SELECTED, SELECTED_FAIRNESS, "accuracy", 0.8, 0.1, candidates=["bert"])
    assert not decision.passed
    assert any("below register.min_metric 0.8" in r for r in decision.reasons)
    assert any("exceeds register.max_group_gap 0.1" in r for r in decision.reasons)


def test_gate_rejects_when_fairness_is_missing() -> None:
    decision = registry.evaluate_gate(SELECTED, None, "macro_f1", 0.5, 0.5, candidates=["bert"])
    assert not decision.passed and "no fairness gap" in decision.reasons[0]


def test_gate_errors_name_the_problem() -> None:
    with pytest.raises(ReviewpipeError, match="metric 'f2'"):
        registry.evaluate_gate(SELECTED, SELECTED_FAIRNESS, "f2", 0.5, 0.5)
    with pytest.raises(ReviewpipeError, match="no candidate model"):
        registry.evaluate_gate(SELECTED, SELECTED_FAIRNESS, "macro_f1", 0.5, 0.5, candidates=["xgb"])


def test_the_gate_sees_only_a_select_set() -> None:
    assert SELECTED["baseline"] == VALIDATION["baseline"]
    assert SELECTED_FAIRNESS["models"]["bert"] == BERT_GAPS
    with pytest.raises(ReviewpipeError, match="role 'report'.*never used to choose"):
        registry.selection_view(METRICS, FAIRNESS, "test")
    with pytest.raises(ReviewpipeError, match="register.select_on is 'holdout'"):
        registry.selection_view(METRICS, FAIRNESS, "holdout")


def test_largest_gap_reads_the_evaluate_stage_layout() -> None:
    feature = {
        "groups": {"Dresses": {"rows": 40, "accuracy": 0.9}, "Tops": {"rows": 30, "accuracy": 0.7}},
        "overall": {"accuracy": 0.8},
        "groups_below_min_rows": [],
        "gaps": {"accuracy": 0.2, "macro_f1": 0.25},
        "largest_gap": {
            "metric": "macro_f1",
            "value": 0.25,
            "lowest_group": "Tops",
            "highest_group": "Dresses",
        },
    }
    fairness = {
        "features": ["product_category"],
        "min_group_rows": 1,
        "models": {
            "bert": {
                "product_category": feature,
                "largest_gap": {
                    "feature": "product_category",
                    "metric": "macro_f1",
                    "value": 0.25,
                    "lowest_group": "Tops",
                    "highest_group": "Dresses",
                },
            }
        },
    }
    assert registry.largest_gap(fairness, "bert") == pytest.approx(0.25)
    decision = registry.evaluate_gate(SELECTED, fairness, "macro_f1", 0.6, 0.2, candidates=["bert"])
    assert not decision.passed and "0.2500 exceeds" in decision.reasons[0]


def test_largest_gap_reads_a_flat_metric_to_gap_section() -> None:
    assert registry.largest_gap({"bert": {"accuracy": 0.03, "macro_f1": 0.07}}, "bert") == pytest.approx(0.07)
    assert registry.largest_gap({"bert": {"accuracy": 0.03}}, "baseline") is None


def test_registry_versions_and_approval_lifecycle(tmp_path: Path) -> None:
    reg = registry.Registry(str(tmp_path / "registry"))
    assert reg.list() == [] and reg.latest() is None
    v1 = reg.register(
        "bert",
        "models/bert",
        status=registry.PENDING,
        metrics={"macro_f1": 0.77},
        model_hash="abc",
        params_hash="p",
        data_hash="d",
        git_commit="c0ffee",
        git_dirty=False,
    )
    v2 = reg.register(
        "baseline",
        "models/baseline/model.joblib",
        status=registry.REJECTED,
        metrics={"macro_f1": 0.5},
        reason="macro_f1 too low",
    )
    assert (v1.version, v2.version) == (1, 2)
    assert (tmp_path / "registry" / "versions" / "0001.json").exists()
    assert [e.version for e in reg.list(status=registry.PENDING)] == [1]
    assert reg.get("latest").version == 2
    with pytest.raises(ReviewpipeError, match="no approved version"):
        reg.get("approved")

    approved = reg.set_status(1, registry.APPROVED, by="alice", reason="looked at the errors")
    assert approved.status == registry.APPROVED
    reloaded = reg.get(1)
    assert (
        reloaded.status == registry.APPROVED and reloaded.data_hash == "d" and reloaded.git_commit == "c0ffee"
    )
    assert [h["status"] for h in reloaded.history] == [registry.PENDING, registry.APPROVED]
    assert reloaded.history[-1]["by"] == "alice"
    assert reg.get("approved").version == 1

    with pytest.raises(ReviewpipeError, match="was rejected"):
        reg.set_status(2, registry.APPROVED, by="bob")
    assert reg.set_status(2, registry.APPROVED, by="bob", force=True).status == registry.APPROVED
    with pytest.raises(ReviewpipeError, match="no version 9"):
        reg.get(9)


def test_registry_on_s3(s3_bucket: str) -> None:
    reg = registry.Registry(f"s3://{s3_bucket}/registry")
    reg.register("bert", "models/bert", status=registry.PENDING, metrics={"accuracy": 0.8})
    reg.register("bert", "models/bert", status=registry.PENDING, metrics={"accuracy": 0.81})
    reg.set_status(2, registry.APPROVED, by="ci")
    fresh = registry.Registry(f"s3://{s3_bucket}/registry")
    assert [(e.version, e.status) for e in fresh.list()] == [(1, registry.PENDING), (2, registry.APPROVED)]


def test_hashes_change_with_content(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.parquet").write_bytes(b"one")
    first = registry.hash_paths([tmp_path / "d"])
    (tmp_path / "d" / "a.parquet").write_bytes(b"two")
    assert registry.hash_paths([tmp_path / "d"]) != first
    assert registry.hash_paths([tmp_path / "missing"]) is None
    assert registry.hash_params({"a": 1, "b": 2}) == registry.hash_params({"b": 2, "a": 1})


def _stage_params(tmp_path: Path, **overrides: object) -> OmegaConf:
    base = OmegaConf.load(ROOT / "conf" / "register" / "default.yaml")
    cfg = OmegaConf.merge(
        base,
        {
            "metrics_uri": str(tmp_path / "reports/metrics.json"),
            "fairness_uri": str(tmp_path / "reports/fairness.json"),
            "data_uri": str(tmp_path / "prepared"),
            "registry_uri": str(tmp_path / "registry"),
            "decision_uri": str(tmp_path / "metrics/register.json"),
            "model_paths": {
                "bert": str(tmp_path / "models/bert"),
                "baseline": str(tmp_path / "models/baseline.joblib"),
            },
            "min_metric": 0.6,
            "max_group_gap": 0.2,
            **overrides,
        },
    )
    return OmegaConf.create({"register": cfg, "storage": {}})


def test_register_stage_records_pass_and_reject(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/metrics.json").write_text(json.dumps(METRICS))
    (tmp_path / "reports/fairness.json").write_text(json.dumps(FAIRNESS))
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared/test.parquet").write_bytes(b"rows")
    (tmp_path / "models/bert").mkdir(parents=True)
    (tmp_path / "models/bert/config.json").write_text("{}")

    register_stage.main(_stage_params(tmp_path))
    decision = json.loads((tmp_path / "metrics/register.json").read_text())
    assert decision["champion"] == "bert" and decision["passed"] and decision["version"] == 1
    entry = registry.Registry(str(tmp_path / "registry")).get(1)
    assert entry.status == registry.PENDING
    assert entry.model_hash == registry.hash_paths([tmp_path / "models/bert"])
    assert entry.data_hash == registry.hash_paths([tmp_path / "prepared"])
    assert entry.params_hash and entry.metrics["validation"]["macro_f1"] == pytest.approx(0.77)
    assert entry.metrics["test"]["macro_f1"] == pytest.approx(0.74)  # recorded, never chosen on
    assert decision["select_on"] == "validation" and decision["metric_value"] == pytest.approx(0.77)

    register_stage.main(_stage_params(tmp_path, min_metric=0.95))  # fail_on_reject false: recorded, no error
    second = registry.Registry(str(tmp_path / "registry")).get(2)
    assert second.status == registry.REJECTED and "below register.min_metric" in second.status_reason

    with pytest.raises(ReviewpipeError, match="quality gate rejected bert"):
        register_stage.main(_stage_params(tmp_path, max_group_gap=0.01, fail_on_reject=True))
    assert registry.Registry(str(tmp_path / "registry")).get(3).status == registry.REJECTED


def test_registry_cli_list_show_approve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = registry.Registry(str(tmp_path / "reg"))
    reg.register(
        "bert",
        "models/bert",
        status=registry.PENDING,
        metrics={"macro_f1": 0.77},
        gate={"metric": "macro_f1", "metric_value": 0.77, "fairness_gap": 0.1},
    )
    reg.register("bert", "models/bert", status=registry.REJECTED, metrics={}, reason="gap too wide")
    base = ["registry", "--registry", str(tmp_path / "reg"), "--params", str(tmp_path / "none.yaml")]

    assert cli_main([*base, "list"]) == 0
    out = capsys.readouterr().out
    assert "PendingManualApproval" in out and "macro_f1=0.7700" in out and "Rejected" in out
    assert cli_main([*base, "approve", "1", "--reason", "ok"]) == 0
    assert "now Approved" in capsys.readouterr().out
    assert cli_main([*base, "show", "approved"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 1 and shown["status"] == "Approved"
    assert cli_main([*base, "approve", "2"]) == 2  # gate-rejected: needs --force
    assert "was rejected" in capsys.readouterr().err
    assert cli_main([*base, "list", "--status", "Approved", "--json"]) == 0
    assert [e["version"] for e in json.loads(capsys.readouterr().out)] == [1]
