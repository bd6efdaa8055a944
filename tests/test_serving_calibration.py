"""Calibration travels inside the package: the tarball of a calibrated model serves the calibrated
probabilities and the decision rule's labels, computed as reviewpipe.evaluation.calibration does."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from reviewpipe.evaluation.calibration import Calibration, prior_shift
from reviewpipe.serving import package
from tests.test_package import tiny_artifacts
from tests.test_registry import evaluated, register_params  # noqa: F401  (evaluated is a fixture)

TEXTS = ["lovely soft dress, perfect fit", "itchy and cheap, returned it", "it is okay I guess", "fine"]


def handler(tarball: Path, into: Path):  # noqa: ANN201
    import importlib.util

    model_dir = package.unpack_package(tarball, into, max_unpacked_bytes=1 << 30)
    spec = importlib.util.spec_from_file_location(
        f"inference_{into.name}", model_dir / "code" / "inference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.model_fn(str(model_dir))


def test_the_registered_package_carries_the_champions_calibration_and_serving_applies_it(
    evaluated: Path,  # noqa: F811
) -> None:
    """register builds the champion's package with its calibration; package ships that version."""
    from reviewpipe.stages import package as package_stage
    from reviewpipe.stages import register as register_stage

    tmp_path = evaluated
    art = tiny_artifacts()
    calibration = Calibration(
        1.7, prior_shift([1 / 3] * 3, [0.1, 0.12, 0.78]), (2.5, 3.0, 1.0), fitted_on={"rows": 2228}
    )
    (tmp_path / "calibration.json").write_text(
        json.dumps({"models": {"baseline": {"calibration": calibration.to_json()}}})
    )
    model_paths = {"model_paths": {"baseline": str(art["baseline"]), "bert": str(art["bert"])}}
    for champion, tarball in (("baseline", "baseline"), ("bert", "model")):  # no calibration for bert: raw
        params = OmegaConf.merge(
            register_params(tmp_path, candidates=[champion]),
            {
                "register": model_paths,
                "package": {
                    "out_dir": str(tmp_path / "out"),
                    "versions": {tarball: "deployable"},
                    "calibration_uri": str(tmp_path / "calibration.json"),
                    "onnx": {"export": False},
                },
            },
        )
        register_stage.main(params)  # builds and stores the champion's package
        package_stage.main(params)  # ships the deployable (just registered) version as <tarball>.tar.gz

    with tarfile.open(tmp_path / "out" / "baseline.tar.gz") as tar:
        shipped = json.loads(tar.extractfile("calibration.json").read())
        info = json.loads(tar.extractfile("model_info.json").read())
    assert Calibration.from_json(shipped) == calibration and info["calibrated"] is True
    with tarfile.open(tmp_path / "out" / "model.tar.gz") as tar:  # no calibration for bert: raw
        assert "calibration.json" not in tar.getnames()

    module, model = handler(tmp_path / "out" / "baseline.tar.gz", tmp_path / "calibrated")
    raw = model.predict_proba(TEXTS)
    served = module.predict_fn({"texts": TEXTS}, model)["predictions"]
    probs = np.array([[p["probabilities"][k] for k in ("-1", "0", "1")] for p in served])
    expected = calibration.probabilities(raw)
    np.testing.assert_allclose(probs, expected, atol=1e-6)  # the response rounds to 6 decimals
    assert [p["label"] for p in served] == [[-1, 0, 1][i] for i in calibration.decide(expected)]
    assert not np.allclose(probs, raw, atol=1e-3)  # calibration changed what is served

    module, model = handler(tmp_path / "out" / "model.tar.gz", tmp_path / "raw")
    raw = model.predict_proba(TEXTS)
    served = module.predict_fn({"texts": TEXTS}, model)["predictions"]
    np.testing.assert_allclose(
        [[p["probabilities"][k] for k in ("-1", "0", "1")] for p in served], raw, atol=1e-6
    )


def test_the_ensemble_packages_its_members_and_serves_what_the_ensemble_predictor_computes(
    tmp_path: Path,
) -> None:
    from reviewpipe.models.baseline import save_model, train_baseline
    from reviewpipe.models.ensemble import Stacker
    from reviewpipe.models.predictors import load_predictor
    from tests.conftest import make_prepared_frame
    from tests.helpers.params import WORD_ONLY_BASELINE, baseline_settings

    art = dict(tiny_artifacts())
    art["baseline"] = tmp_path / "models" / "baseline" / "model.joblib"  # the project's baseline (class ids)
    cfg = baseline_settings(*WORD_ONLY_BASELINE)
    save_model(train_baseline(make_prepared_frame(120, seed=1), cfg), str(art["baseline"]))
    rng = np.random.default_rng(0)
    stacker = Stacker(("baseline", "bert"), rng.normal(0, 0.7, (3, 6)), rng.normal(0, 0.3, 3), 1.0)
    ensemble = tmp_path / "models" / "ensemble"
    ensemble.mkdir(parents=True)
    spec = {
        "stacker": stacker.to_json(),
        "member_paths": {"baseline": str(art["baseline"]), "bert": str(art["bert"])},
    }
    (ensemble / "stacker.json").write_text(json.dumps(spec))
    info = package.build_package(ensemble, tmp_path / "ensemble.tar.gz", model_name="ensemble")
    assert info["kind"] == "ensemble"
    with tarfile.open(tmp_path / "ensemble.tar.gz") as tar:
        names = tar.getnames()
        shipped = json.loads(tar.extractfile("stacker.json").read())
    assert "members/baseline/model.joblib" in names and "members/bert/config.json" in names
    assert shipped == {"stacker": json.loads(json.dumps(stacker.to_json()))}  # no build-machine paths
    module, model = handler(tmp_path / "ensemble.tar.gz", tmp_path / "served")
    expected = load_predictor("ensemble", ensemble).predict_proba(TEXTS)
    np.testing.assert_allclose(model.predict_proba(TEXTS), expected, atol=1e-5)
    served = module.predict_fn({"texts": TEXTS}, model)["predictions"]
    assert [p["label"] for p in served] == [[-1, 0, 1][i] for i in expected.argmax(1)]


def test_an_ensemble_package_serves_its_bert_member_on_static_int8_onnx(tmp_path: Path) -> None:
    """The default serving backend (ONNX Runtime, static int8) needs each Hugging Face member's graphs
    inside an ensemble's package: they ship under members/<name>/onnx/, and the package scores with
    that backend close to fp32 (a real-data `make repro` chose the ensemble and failed without them)."""
    from reviewpipe.models.ensemble import Stacker
    from reviewpipe.serving import onnx_build
    from reviewpipe.serving.score import score_package

    art = tiny_artifacts()
    stacker = Stacker(("baseline", "bert"), np.eye(3, 6) + np.eye(3, 6, 3), np.zeros(3), 1.0)
    ensemble = tmp_path / "ensemble"
    ensemble.mkdir()
    (ensemble / "stacker.json").write_text(
        json.dumps(
            {
                "stacker": stacker.to_json(),
                "member_paths": {"baseline": str(art["baseline"]), "bert": str(art["bert"])},
            }
        )
    )
    settings = onnx_build.OnnxSettings(export=True, calibration_rows=16, quant_format="qdq")
    info = package.build_package(
        ensemble,
        tmp_path / "ensemble.tar.gz",
        model_name="ensemble",
        onnx=settings,
        calibration_texts=TEXTS * 4,
    )
    assert info["onnx"]["files"] == ["members/bert/onnx/model.int8.onnx", "members/bert/onnx/model.onnx"]
    with tarfile.open(tmp_path / "ensemble.tar.gz") as tar:
        assert "members/bert/onnx/model.int8.onnx" in tar.getnames()
    texts = TEXTS * 3
    fp32 = score_package(tmp_path / "ensemble.tar.gz", texts, "torch")
    int8 = score_package(tmp_path / "ensemble.tar.gz", texts, "onnx-int8")
    alone = score_package(tmp_path / "ensemble.tar.gz", texts, "onnx-int8", request_rows=1)
    assert int8.compare(fp32)["max_probability_difference"] < 0.05
    assert int8.compare(alone)["max_probability_difference"] <= 1e-4  # batch-independent
