"""Quality gate, model registry (local and S3 on moto), the `register` stage and `reviewpipe registry`."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from reviewpipe import registry
from reviewpipe.cli import main as cli_main
from reviewpipe.errors import ReviewpipeError
from reviewpipe.stages import register as register_stage
from tests.helpers.params import conf_section

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
SELECTED = registry.selection_view(METRICS, "validation")


def predictions(seed: int = 0) -> pd.DataFrame:
    """evaluate's predictions.parquet: validation rows where BERT misreads 10 % of the Jackets reviews
    (a gap of ~0.1 against a perfect rest), and test rows where it misreads every Dresses review (a
    gate that looked at test would fail)."""
    rng = np.random.default_rng(seed)
    parts = []
    for name in ("validation", "test"):
        category = np.repeat(["Dresses", "Jackets", "Swim"], [300, 200, 100])
        sentiment = rng.choice([-1, 0, 1], size=600)
        predicted = sentiment.copy()
        if name == "validation":
            jackets = np.flatnonzero(category == "Jackets")
            wrong = rng.choice(jackets, size=20, replace=False)
        else:
            wrong = np.flatnonzero(category == "Dresses")
        predicted[wrong] = np.where(sentiment[wrong] == 1, -1, 1)
        parts.append(
            pd.DataFrame(
                {
                    "set": name,
                    "review_id": np.arange(600),
                    "sentiment": sentiment,
                    "product_category": category,
                    "age_band": rng.choice(["18-34", "35-54", "55+"], size=600),
                    "bert_predicted": predicted,
                    "baseline_predicted": sentiment,
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    for model in ("bert", "baseline"):  # evaluate writes each model's probabilities too: 0.6 on its label
        for label, name in ((-1, "negative"), (0, "neutral"), (1, "positive")):
            frame[f"{model}_p_{name}"] = np.where(frame[f"{model}_predicted"] == label, 0.6, 0.2)
    return frame


def register_package(
    reg: registry.Registry, tarball: Path, model_name: str, status: str, kind: str = "sklearn"
) -> registry.ModelPackage:
    """A registry version holding a built model.tar.gz, as the register stage records it."""
    stored = reg.store_package(str(tarball))
    return reg.register(
        model_name,
        f"models/{model_name}",
        status=status,
        metrics={"validation": {}},
        package={**stored, "model_version": f"{model_name}-test", "kind": kind},
    )


def test_champion_is_chosen_among_candidates_on_validation() -> None:
    champion, ranking = registry.choose_champion(SELECTED, "macro_f1", ["bert", "baseline"])
    assert champion == "bert"  # automl scores higher but is not a candidate; baseline wins on test only
    assert ranking == [("bert", 0.77), ("baseline", 0.69)]
    with pytest.raises(ReviewpipeError, match="metric 'f2'"):
        registry.choose_champion(SELECTED, "f2", ["bert"])
    with pytest.raises(ReviewpipeError, match="no candidate model"):
        registry.choose_champion(SELECTED, "macro_f1", ["xgb"])


def test_quality_check_and_decision() -> None:
    low = registry.quality_check("macro_f1", 0.77, 0.8, "validation")
    assert not low.passed and low.detail == "validation macro_f1 0.7700 is below register.min_metric 0.8"
    ok = registry.quality_check("macro_f1", 0.77, 0.6, "validation")
    fairness = registry.Check("fairness", True, "fine")
    decision = registry.GateDecision("bert", "validation", "macro_f1", 0.77, (ok, fairness))
    assert decision.passed and decision.reasons == ()
    assert not registry.GateDecision("bert", "validation", "macro_f1", 0.77, (low, fairness)).passed
    assert decision.to_dict()["checks"][0]["inputs"] == {
        "metric": "macro_f1",
        "value": 0.77,
        "min_metric": 0.6,
        "set": "validation",
    }


def test_quality_is_judged_on_what_the_package_serves() -> None:
    """The packaged artifact's served figure (calibration + decision rule, deploy backend) decides;
    the evaluated model's figure is recorded beside it."""
    served_low = registry.quality_check("macro_f1", 0.81, 0.8, "validation", served=0.78)
    assert not served_low.passed
    assert served_low.detail == (
        "served validation macro_f1 0.7800 is below register.min_metric 0.8 (model as evaluated: 0.8100)"
    )
    assert served_low.inputs["value"] == 0.81 and served_low.inputs["served_value"] == 0.78
    assert registry.quality_check("macro_f1", 0.79, 0.8, "validation", served=0.82).passed


def test_the_fairness_gate_measures_the_labels_the_decision_rule_serves(tmp_path: Path) -> None:
    """With a calibration shipped in the package, the gaps are those of its decision rule applied to
    the evaluated probabilities (as inference.py applies it), not of the raw argmax."""
    from reviewpipe.evaluation.calibration import Calibration
    from reviewpipe.schema import RegisterParams
    from reviewpipe.storage import StorageOptions

    frame = predictions()
    (tmp_path / "reports").mkdir()
    frame.to_parquet(tmp_path / "reports/predictions.parquet", index=False)
    cfg = RegisterParams.from_params(register_params(tmp_path))
    options = StorageOptions()
    raw, _ = register_stage.champion_gaps(cfg, "bert", options)
    identity = Calibration().to_json()
    same, _ = register_stage.champion_gaps(cfg, "bert", options, identity)
    assert [(g.group, g.measure, g.gap) for g in same] == [(g.group, g.measure, g.gap) for g in raw]
    # a rule that always answers neutral: accuracy is the neutral share in every group
    neutral, _ = register_stage.champion_gaps(
        cfg, "bert", options, Calibration(decision_weights=(1.0, 100.0, 1.0)).to_json()
    )
    jackets = {g.measure: g for g in neutral if g.group == "Jackets"}
    rows = frame[frame["set"] == "validation"]
    in_jackets = rows["product_category"] == "Jackets"
    neutral_share = (rows["sentiment"] == 0).groupby(in_jackets).mean()  # accuracy of "always neutral"
    assert jackets["accuracy"].gap == pytest.approx(neutral_share[False] - neutral_share[True])
    raw_jackets = {g.measure: g for g in raw if g.group == "Jackets"}
    assert jackets["accuracy"].gap != pytest.approx(raw_jackets["accuracy"].gap)


def test_the_gate_sees_only_a_select_set() -> None:
    assert SELECTED["baseline"] == VALIDATION["baseline"]
    with pytest.raises(ReviewpipeError, match="role 'report'.*never used to choose"):
        registry.selection_view(METRICS, "test")
    with pytest.raises(ReviewpipeError, match="register.select_on is 'holdout'"):
        registry.selection_view(METRICS, "holdout")


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


def register_params(tmp_path: Path, **overrides: object) -> OmegaConf:
    base = conf_section("register")
    cfg = OmegaConf.merge(
        base,
        {
            "metrics_uri": str(tmp_path / "reports/metrics.json"),
            "predictions_uri": str(tmp_path / "reports/predictions.parquet"),
            "data_uri": str(tmp_path / "prepared"),
            "registry_uri": str(tmp_path / "registry"),
            "decision_uri": str(tmp_path / "metrics/register.json"),
            "report_uri": str(tmp_path / "reports/register/gate.json"),
            "model_paths": {
                "bert": str(tmp_path / "models/bert"),
                "baseline": str(tmp_path / "models/baseline.joblib"),
            },
            "fairness": {"features": ["product_category", "age_band"], "resamples": 500},
            "candidates": ["bert", "baseline"],  # automl scores best on validation but is no candidate here
            # the quality check judges the package as served: the tiny untrained BERT's macro-F1 (~0.17)
            "min_metric": 0.1,
        },
    )
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{k}={v}" for k, v in overrides.items()]))
    package = OmegaConf.merge(
        conf_section("package"),
        {
            "out_dir": str(tmp_path / "package"),
            "registry_uri": str(tmp_path / "registry"),
            "versions": {"model": "deployable"},
            "calibration_uri": None,
            "onnx": {"export": False},  # fp32 only: the serving check scores it with the torch backend
        },
    )
    evaluate = {
        "sets": {
            "validation": {"split": "validation", "mix": "balanced", "role": "select"},
            "test": {"split": "test", "mix": "balanced", "role": "report"},
        }
    }
    return OmegaConf.create(
        {
            "register": cfg,
            "package": package,
            "evaluate": evaluate,
            "prepare": {"out_dir": str(tmp_path / "prepared")},
            "serve": {"backend": "torch", "quantize": "none"},
            "storage": {},
        }
    )


@pytest.fixture
def evaluated(tmp_path: Path) -> Path:
    """evaluate's outputs (METRICS, predictions), prepared validation/test rows and a tiny real BERT."""
    from tests.conftest import make_prepared_frame
    from tests.test_package import tiny_artifacts  # imported here: test_package imports this module

    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/metrics.json").write_text(json.dumps(METRICS))
    predictions().to_parquet(tmp_path / "reports/predictions.parquet", index=False)
    (tmp_path / "prepared").mkdir()
    for seed, split in enumerate(("validation", "test")):
        make_prepared_frame(60, seed=seed).to_parquet(tmp_path / f"prepared/{split}.parquet", index=False)
    shutil.copytree(tiny_artifacts()["bert"], tmp_path / "models/bert")
    return tmp_path


def test_register_stage_packages_gates_and_records(
    evaluated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path = evaluated
    register_stage.main(register_params(tmp_path))  # approval: auto (the default)
    decision = json.loads((tmp_path / "metrics/register.json").read_text())
    assert decision["champion"] == "bert" and decision["passed"] and decision["version"] == 1
    assert decision["status"] == "Approved" and decision["deployable_version"] == 1
    assert decision["checks"] == {
        "quality": True,
        "fairness": True,
        "serving": True,
    }  # test's rows never gate
    reg = registry.Registry(str(tmp_path / "registry"))
    entry = reg.get(1)
    assert entry.status == registry.APPROVED and entry.gate["approval"] == "auto"
    assert entry.model_hash == registry.hash_paths([tmp_path / "models/bert"])
    assert entry.data_hash == registry.hash_paths([tmp_path / "prepared"])
    assert entry.params_hash and entry.metrics["validation"]["macro_f1"] == pytest.approx(0.77)
    assert entry.metrics["test"]["macro_f1"] == pytest.approx(0.74)  # recorded, never chosen on
    assert decision["select_on"] == "validation" and decision["metric_value"] == pytest.approx(0.77)
    # the gated package is stored in the registry and its sha256 recorded (the lookup serve/deploy use)
    stored = Path(entry.package["uri"])
    assert stored.name == f"{entry.sha256}.tar.gz" and entry.package["kind"] == "huggingface"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == entry.sha256 == decision["sha256"]
    assert reg.find_by_sha256(entry.sha256).version == 1
    # the packaged artifact scored through its own handler, fp32 and as deploy serves it (torch here)
    assert set(entry.serving["sets"]) == {"validation", "test"} and entry.serving["backend"] == "torch"
    served = entry.serving["sets"]["validation"]
    assert served["fp32"]["package_sha256"] == entry.sha256 and served["fp32"]["rows"] == 60
    assert served["agreement"] == 1.0 and served["served"]["accuracy"] == served["fp32"]["accuracy"]
    assert decision["serving"] == {"backend": "torch", "drop": 0.0, "agreement": 1.0}
    assert "version 1 passed the gate and is approved" in capsys.readouterr().out

    register_stage.main(
        register_params(tmp_path, min_metric=0.95)
    )  # fail_on_reject false: recorded, no error
    second = reg.get(2)
    assert second.status == registry.REJECTED and "is below register.min_metric 0.95" in second.status_reason
    out = capsys.readouterr().out
    assert "version 2 REJECTED: served validation macro_f1 0.1667 is below register.min_metric 0.95 " in out
    assert "(model as evaluated: 0.7700)" in out
    assert "version 1 (bert, Approved) keeps serving" in out

    register_stage.main(register_params(tmp_path, approval="manual"))
    assert reg.get(3).status == registry.PENDING and reg.deployable().version == 1
    assert "approve it with `reviewpipe registry approve 3`; version 1 (bert, Approved) keeps serving" in (
        capsys.readouterr().out
    )

    # the fairness gate: Jackets' gap (~0.1, interval above 0.03) counts against a 0.03 threshold
    with pytest.raises(ReviewpipeError, match="the gate rejected bert"):
        register_stage.main(register_params(tmp_path, **{"fairness.max_gap": 0.03, "fail_on_reject": True}))
    fourth = reg.get(4)
    assert (
        fourth.status == registry.REJECTED and "exceed register.fairness.max_gap 0.03" in fourth.status_reason
    )
    assert "accuracy of product_category=Jackets: 0.10" in fourth.status_reason
    report = json.loads((tmp_path / "reports/register/gate.json").read_text())
    jackets = next(
        g for g in report["fairness"]["gaps"] if g["group"] == "Jackets" and g["measure"] == "accuracy"
    )
    assert jackets["gap"] == pytest.approx(0.1) and (jackets["group_rows"], jackets["rest_rows"]) == (
        200,
        400,
    )
    assert 0.03 < jackets["low"] < 0.1 < jackets["high"]
    assert report["version"] == 4 and report["status"] == "Rejected" and report["fairness"]["excluded"] == []


def test_package_obeys_the_registry(evaluated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The next step obeys the gate: Rejected and pending versions are never packaged; the previously
    approved version keeps being shipped; with nothing approved, package fails and says what to do."""
    from reviewpipe.stages import package as package_stage

    tmp_path = evaluated
    reg = registry.Registry(str(tmp_path / "registry"))
    shipped = tmp_path / "package/model.tar.gz"

    register_stage.main(register_params(tmp_path, min_metric=0.95))  # v1 Rejected
    with pytest.raises(ReviewpipeError, match=r"no deployable version .*1 Rejected .*registry approve N"):
        package_stage.main(register_params(tmp_path))
    assert not shipped.exists()

    register_stage.main(register_params(tmp_path))  # v2 Approved
    package_stage.main(register_params(tmp_path))
    manifest = json.loads((tmp_path / "package/manifest.json").read_text())
    assert manifest["model"]["registry"]["version"] == 2
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == reg.get(2).sha256

    (tmp_path / "models/bert/weights.bin").write_bytes(b"retrained")  # a different model, then rejected
    register_stage.main(register_params(tmp_path, min_metric=0.95))  # v3 Rejected
    assert reg.get(3).sha256 != reg.get(2).sha256
    capsys.readouterr()
    package_stage.main(register_params(tmp_path))
    out = capsys.readouterr().out
    assert "newest version 3 (bert, Rejected): served validation macro_f1 0.1667 is below" in out
    assert "version 2 (bert, Approved) keeps serving" in out
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == reg.get(2).sha256  # not v3's bytes

    register_stage.main(register_params(tmp_path, approval="manual"))  # v4 Pending: still v2
    package_stage.main(register_params(tmp_path))
    assert json.loads((tmp_path / "package/manifest.json").read_text())["model"]["registry"]["version"] == 2
    reg.set_status(4, registry.APPROVED, by="alice")  # `reviewpipe registry approve 4`
    package_stage.main(register_params(tmp_path))
    assert json.loads((tmp_path / "package/manifest.json").read_text())["model"]["registry"]["version"] == 4
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == reg.get(4).sha256

    with pytest.raises(ReviewpipeError, match="version 3 .* not Approved"):
        package_stage.main(
            OmegaConf.merge(register_params(tmp_path), {"package": {"versions": {"model": 3}}})
        )


def test_a_package_changed_after_registration_is_refused(tmp_path: Path) -> None:
    reg = registry.Registry(str(tmp_path / "registry"))
    tarball = tmp_path / "model.tar.gz"
    tarball.write_bytes(b"the gated bytes")
    entry = register_package(reg, tarball, "baseline", registry.APPROVED)
    Path(entry.package["uri"]).write_bytes(b"swapped bytes")
    with pytest.raises(ReviewpipeError, match="changed after registration. Refusing"):
        reg.fetch_package(entry, str(tmp_path / "out.tar.gz"))
    assert not (tmp_path / "out.tar.gz").exists()


def test_deployable_is_the_newest_approved_version(tmp_path: Path) -> None:
    reg = registry.Registry(str(tmp_path / "registry"))
    assert reg.deployable() is None
    tarballs = []
    for i in range(4):
        tarballs.append(tmp_path / f"{i}.tar.gz")
        tarballs[-1].write_bytes(f"package {i}".encode())
    register_package(reg, tarballs[0], "baseline", registry.APPROVED)
    register_package(reg, tarballs[1], "bert", registry.APPROVED)
    register_package(reg, tarballs[2], "bert", registry.REJECTED)
    register_package(reg, tarballs[3], "bert", registry.PENDING)
    assert reg.deployable().version == 2 and reg.get("deployable").version == 2
    reg.set_status(2, registry.REJECTED, by="ops", reason="roll back")  # `registry reject 2`
    assert reg.deployable().version == 1
    reg.set_status(4, registry.APPROVED, by="alice")
    assert reg.deployable().version == 4
    sha_of_1 = reg.get(1).sha256
    assert reg.find_by_sha256(sha_of_1, status=registry.APPROVED).version == 1
    assert reg.find_by_sha256("0" * 64) is None


def test_registry_cli_list_show_approve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = registry.Registry(str(tmp_path / "reg"))
    reg.register(
        "bert",
        "models/bert",
        status=registry.PENDING,
        metrics={"macro_f1": 0.77},
        gate={"select_on": "validation", "metric": "macro_f1", "metric_value": 0.77},
    )
    reg.register("bert", "models/bert", status=registry.REJECTED, metrics={}, reason="gap too wide")
    base = ["registry", "--registry", str(tmp_path / "reg"), "--params", str(tmp_path / "none.yaml")]

    assert cli_main([*base, "list"]) == 0
    out = capsys.readouterr().out
    assert "PendingManualApproval" in out and "validation macro_f1=0.7700" in out and "Rejected" in out
    assert "deployable" not in out
    assert cli_main([*base, "approve", "1", "--reason", "ok"]) == 0
    out = capsys.readouterr().out
    assert "now Approved" in out and "deployable: version 1 (bert, Approved)" in out
    assert cli_main([*base, "show", "approved"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 1 and shown["status"] == "Approved"
    assert cli_main([*base, "approve", "2"]) == 2  # gate-rejected: needs --force
    assert "was rejected" in capsys.readouterr().err
    assert cli_main([*base, "list", "--status", "Approved", "--json"]) == 0
    assert [e["version"] for e in json.loads(capsys.readouterr().out)] == [1]


WRITER = """
import sys, time
from reviewpipe.registry.store import PENDING, Registry
uri, writer, count, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
reg = Registry(uri)
time.sleep(max(0.0, start_at - time.time()))  # every writer starts at the same moment
for i in range(count):
    reg.register(f"writer{writer}", f"models/{i}", status=PENDING, metrics={"i": i})
"""


def _race(uri: str, writers: int, count: int) -> list[registry.ModelPackage]:
    """`writers` separate processes registering `count` versions each, all starting at once."""
    start_at = time.time() + 4.0
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, uri, str(w), str(count), str(start_at)])
        for w in range(writers)
    ]
    assert [proc.wait(timeout=300) for proc in procs] == [0] * writers
    return registry.Registry(uri).list()


def test_concurrent_writers_get_unique_versions_locally(tmp_path: Path) -> None:
    entries = _race(str(tmp_path / "registry"), writers=6, count=5)
    assert [e.version for e in entries] == list(range(1, 31))  # no number lost, none written twice
    per_writer = {
        w: sorted(e.metrics["i"] for e in entries if e.model_name == f"writer{w}") for w in range(6)
    }
    assert all(done == list(range(5)) for done in per_writer.values())
    assert not list((tmp_path / "registry" / "versions").glob("*.tmp-*"))


@pytest.mark.slow
def test_concurrent_writers_get_unique_versions_on_s3(s3_bucket: str) -> None:
    """Conditional PUT (If-None-Match: *) against moto's S3 server, from separate processes."""
    entries = _race(f"s3://{s3_bucket}/registry", writers=4, count=3)
    assert [e.version for e in entries] == list(range(1, 13))
    assert sorted((e.model_name, e.metrics["i"]) for e in entries) == sorted(
        (f"writer{w}", i) for w in range(4) for i in range(3)
    )


def test_create_exclusive_refuses_an_existing_file(tmp_path: Path, s3_bucket: str) -> None:
    from reviewpipe import storage

    for uri in (str(tmp_path / "x.json"), f"s3://{s3_bucket}/x.json"):
        assert storage.create_exclusive(uri, b"first", None)
        assert not storage.create_exclusive(uri, b"second", None)
        fs, path = storage.get_fs(uri)
        assert fs.cat_file(path) == b"first"


def test_deploy_refuses_a_package_that_is_not_an_approved_version(tmp_path: Path) -> None:
    from reviewpipe.deploy import VariantConfig
    from reviewpipe.stages.deploy import approved_versions

    reg = registry.Registry(str(tmp_path / "registry"))
    tarballs = {}
    for name in ("approved", "rejected", "stray"):
        tarballs[name] = tmp_path / f"{name}.tar.gz"
        tarballs[name].write_bytes(name.encode())
    register_package(reg, tarballs["approved"], "bert", registry.APPROVED)
    register_package(reg, tarballs["rejected"], "bert", registry.REJECTED)
    ok = approved_versions([VariantConfig("champion", str(tarballs["approved"]))], reg)
    assert ok["champion"]["version"] == 1 and ok["champion"]["sha256"] == reg.get(1).sha256
    with pytest.raises(ReviewpipeError, match=r"is version 2 \(bert, Rejected\); only Approved"):
        approved_versions([VariantConfig("champion", str(tarballs["rejected"]))], reg)
    with pytest.raises(ReviewpipeError, match="is not a registry version"):
        approved_versions([VariantConfig("champion", str(tarballs["stray"]))], reg)


def test_serving_check_compares_the_served_package_with_fp32() -> None:
    def figures(fp32: float, served: float, agreement: float) -> dict:
        row = {"fp32": {"accuracy": fp32}, "served": {"accuracy": served}, "agreement": agreement}
        return {"backend": "onnx-int8", "sets": {"validation": row, "test": row}}

    ok = registry.serving_check(figures(0.80, 0.795, 0.99), "validation", 0.01, 0.98)
    assert ok.passed and ok.inputs["drop"] == pytest.approx(0.005)
    dropped = registry.serving_check(figures(0.80, 0.78, 0.99), "validation", 0.01, 0.98)
    assert not dropped.passed and "drop exceeds register.max_serving_drop 0.01" in dropped.detail
    disagrees = registry.serving_check(figures(0.80, 0.80, 0.95), "validation", 0.01, 0.98)
    assert not disagrees.passed and "below register.min_serving_agreement 0.98" in disagrees.detail
    with pytest.raises(ReviewpipeError, match="add it to register.serving_sets"):
        registry.serving_check(figures(0.8, 0.8, 1.0), "holdout", 0.01, 0.98)


def test_a_package_refused_by_the_serving_check_is_not_shipped(
    evaluated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The serving check binds: the refused version is Rejected and package keeps the previous one."""
    from reviewpipe.stages import package as package_stage

    register_stage.main(register_params(evaluated))  # v1 Approved
    (evaluated / "models/bert/retrained.txt").write_text("other bytes")
    # an agreement no served package can reach stands in for a backend that changes labels
    register_stage.main(register_params(evaluated, min_serving_agreement=1.5))
    reg = registry.Registry(str(evaluated / "registry"))
    assert (
        reg.get(2).status == registry.REJECTED
        and "register.min_serving_agreement 1.5" in reg.get(2).status_reason
    )
    capsys.readouterr()
    package_stage.main(register_params(evaluated))
    assert "version 1 (bert, Approved) keeps serving" in capsys.readouterr().out
    shipped = (evaluated / "package/model.tar.gz").read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == reg.get(1).sha256 != reg.get(2).sha256
