"""The packaged artifact as served: loaded through its own code/inference.py (loader), scored with
the serving backend (score_package), static int8 ONNX that does not depend on the batch, no local
paths inside, size-capped unpacking. Tiny models trained or built here; nothing is skipped."""

from __future__ import annotations

import functools
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving import loader, onnx_build, package
from reviewpipe.serving.score import BACKENDS, deployed_backend, score_package, serving_backend
from tests.test_package import TRAIN_LABELS, TRAIN_TEXTS, tiny_artifacts

MAX_BYTES = 1 << 30
ONNX = onnx_build.OnnxSettings(export=True, calibration_rows=32, quant_format="qdq")
REVIEWS = [
    "love this dress, great fit and lovely fabric",
    "awful fabric, terrible fit, sent it back",
    "it is okay, nothing special",
    "the colour is nice but the sizing runs small so I am not sure",
    "perfect",
    "returned it",
] * 4


@functools.cache
def onnx_package() -> Path:
    """The tiny BERT packaged with its fp32 and calibrated static int8 ONNX graphs (built once)."""
    art = tiny_artifacts()
    out = Path(tempfile.mkdtemp(prefix="reviewpipe-test-onnx-")) / "model.tar.gz"
    package.build_package(
        art["bert"], out, model_name="bert", model_version="bert-v1", onnx=ONNX, calibration_texts=REVIEWS
    )
    return out


def rows(texts: list[str], labels: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"review_body": texts, "sentiment": labels})


def test_score_package_trains_packages_and_scores_the_served_artifact(tmp_path: Path) -> None:
    """A tiny model trained here, packaged, scored through its own handler: the served labels and
    accuracy equal the in-process model's (nothing skipped when no trained model exists)."""
    import joblib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TRAIN_TEXTS, TRAIN_LABELS)
    joblib.dump(model, tmp_path / "model.joblib")
    tarball = tmp_path / "baseline.tar.gz"
    package.build_package(tmp_path / "model.joblib", tarball, model_name="baseline", model_version="b-v3")
    texts = ["love it", "awful, terrible", "okay I guess", "great fit", "returned it, awful"]
    truth = [1, -1, 0, 1, 1]  # the last one is wrong on purpose: accuracy 0.8 if the model says -1
    score = score_package(tarball, rows(texts, truth), "onnx-int8", request_rows=2)
    expected = model.predict_proba(texts)
    np.testing.assert_allclose(score.probabilities, expected, atol=5e-7)  # served JSON: 6 decimals
    assert score.predicted.tolist() == model.predict(texts).tolist()
    assert score.metrics["accuracy"] == pytest.approx(float((model.predict(texts) == truth).mean()))
    assert score.metrics["rows"] == 5 and score.model_version == "b-v3" and score.kind == "sklearn"
    assert score.sha256 == package.file_sha256(tarball)
    assert score.compare(expected) == {
        "agreement": 1.0,
        "max_probability_difference": pytest.approx(0, abs=5e-7),
    }
    assert score.to_dict()["package_sha256"] == score.sha256


def test_scores_are_the_labels_the_package_answers_under_its_decision_rule(tmp_path: Path) -> None:
    """A package whose calibration ships a decision rule that favours neutral: the served labels
    differ from the probabilities' argmax, and the scored metrics are those of the served labels."""
    import joblib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from reviewpipe.evaluation.calibration import Calibration

    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TRAIN_TEXTS, TRAIN_LABELS)
    joblib.dump(model, tmp_path / "model.joblib")
    rule = Calibration(decision_weights=(1.0, 50.0, 1.0)).to_json()  # neutral unless others dominate 50x
    tarball = tmp_path / "ruled.tar.gz"
    package.build_package(tmp_path / "model.joblib", tarball, model_name="baseline", calibration=rule)
    texts = ["love it", "awful, terrible", "okay I guess", "great fit", "returned it, awful"]
    truth = [1, -1, 0, 1, -1]
    score = score_package(tarball, rows(texts, truth), "torch")
    argmax = np.asarray([-1, 0, 1])[score.probabilities.argmax(axis=1)]
    expected = np.asarray([-1, 0, 1])[(score.probabilities * np.asarray([1.0, 50.0, 1.0])).argmax(axis=1)]
    assert score.predicted.tolist() == expected.tolist()
    assert (score.predicted != argmax).any()  # the rule changed some labels
    assert score.metrics["accuracy"] == pytest.approx(float((expected == np.asarray(truth)).mean()))
    plain = score_package(_plain(tmp_path), rows(texts, truth), "torch")
    assert score.compare(plain)["agreement"] == pytest.approx(float((expected == plain.predicted).mean()))


def _plain(tmp_path: Path) -> Path:
    out = tmp_path / "plain.tar.gz"
    package.build_package(tmp_path / "model.joblib", out, model_name="baseline")
    return out


def test_static_int8_is_served_from_the_package_and_does_not_depend_on_the_batch() -> None:
    tarball = onnx_package()
    labels = [1, -1, 0, 0, 1, -1] * 4
    fp32 = score_package(tarball, rows(REVIEWS, labels), "torch", request_rows=7)
    int8 = score_package(tarball, rows(REVIEWS, labels), "onnx-int8", request_rows=7)
    alone = score_package(tarball, rows(REVIEWS, labels), "onnx-int8", request_rows=1)
    together = score_package(tarball, rows(REVIEWS, labels), "onnx-int8", request_rows=len(REVIEWS))
    # one review per request, or all in one: the same probabilities (fixed activation scales)
    assert int8.compare(alone)["max_probability_difference"] <= 1e-4
    assert int8.compare(together)["max_probability_difference"] <= 1e-4
    assert int8.compare(fp32)["agreement"] >= 0.9 and int8.compare(fp32)["max_probability_difference"] < 0.05
    onnx_fp32 = score_package(tarball, rows(REVIEWS, labels), "onnx", request_rows=5)
    assert onnx_fp32.compare(fp32)["max_probability_difference"] <= 1e-5


def test_static_int8_needs_the_shipped_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    art = tiny_artifacts()  # packaged without ONNX graphs
    with pytest.raises(FileNotFoundError, match=r"model\.int8\.onnx"):
        score_package(art["bert_tar"], REVIEWS[:2], "onnx-int8")
    monkeypatch.setenv("REVIEWPIPE_BACKEND", "torch")
    monkeypatch.setenv("REVIEWPIPE_QUANTIZE", "int8")
    with pytest.raises(ValueError, match="REVIEWPIPE_BACKEND=onnx"):
        loader.load_package(art["bert_tar"], max_unpacked_bytes=MAX_BYTES)


def test_onnx_package_is_reproducible_and_holds_no_local_paths(tmp_path: Path) -> None:
    import shutil

    art = tiny_artifacts()
    again = tmp_path / "again.tar.gz"
    package.build_package(
        art["bert"], again, model_name="bert", model_version="bert-v1", onnx=ONNX, calibration_texts=REVIEWS
    )
    assert package.file_sha256(again) == package.file_sha256(onnx_package())
    # transformers records the directory a model was loaded from, nested configs included
    model_dir = tmp_path / "bert"
    shutil.copytree(art["bert"], model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["_name_or_path"] = str(model_dir)
    config["encoder"] = {"_name_or_path": f"{sys.prefix}/lib/site-packages/minilm", "hidden_size": 32}
    (model_dir / "config.json").write_text(json.dumps(config))
    package.build_package(
        model_dir, again, model_name="bert", model_version="bert-v1", onnx=ONNX, calibration_texts=REVIEWS
    )
    local = [str(model_dir), str(art["bert"]), str(art["root"]), sys.prefix, str(Path.home()), "/tmp/"]
    with tarfile.open(again) as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            for path in local:
                assert path.encode() not in data, (member.name, path)
            assert member.mtime == 0 and member.uname == "" and member.mode == 0o644
        config = json.load(tar.extractfile("config.json"))  # type: ignore[arg-type]
    assert config["_name_or_path"] == "bert" and config["encoder"]["_name_or_path"] == "bert"
    assert again.read_bytes()[4:8] == b"\0\0\0\0"  # gzip header mtime 0


def test_the_gate_scores_with_the_deploy_targets_backend() -> None:
    """Local: the server's serve.backend/quantize. SageMaker: the container's torch backend, whatever
    the local server runs, so register's serving check judges what the endpoint will answer."""
    from tests.helpers.params import conf_section

    serve = {"backend": "onnx", "quantize": "int8"}
    assert deployed_backend(serve, conf_section("deploy", "local")) == "onnx-int8"
    sagemaker = conf_section("deploy", "sagemaker")
    assert deployed_backend(serve, sagemaker) == "torch"
    sagemaker.sagemaker.quantize = "int8-dynamic"
    assert deployed_backend(serve, sagemaker) == "torch-int8-dynamic"
    assert deployed_backend(serve, None) == "onnx-int8"


def test_serving_backend_follows_serve_settings() -> None:
    assert serving_backend({"backend": "onnx", "quantize": "int8"}) == "onnx-int8"
    assert serving_backend({"backend": "torch", "quantize": "none"}) == "torch"
    assert serving_backend({"backend": "onnx", "quantize": "int8-dynamic"}) == "onnx-int8-dynamic"
    with pytest.raises(ReviewpipeError, match="not a serving backend"):
        serving_backend({"backend": "torch", "quantize": "int8"})
    assert set(BACKENDS) >= {"torch", "onnx", "onnx-int8"}
    with pytest.raises(ReviewpipeError, match="row 1 has no review text"):
        score_package(tiny_artifacts()["baseline_tar"], ["fine", "  "], "torch")


def test_handler_is_loaded_by_file_without_touching_sys_path() -> None:
    art = tiny_artifacts()
    path_before, modules_before = list(sys.path), set(sys.modules)
    first = loader.load_package(art["baseline_tar"], max_unpacked_bytes=MAX_BYTES, name="a")
    second = loader.load_package(art["baseline_tar"], max_unpacked_bytes=MAX_BYTES, name="a")
    try:
        assert sys.path == path_before
        assert not any(
            m.startswith(("inference", "reviewpipe_handler")) for m in set(sys.modules) - modules_before
        )
        assert first.module is not second.module and first.module.__name__ != second.module.__name__
        assert first.model_dir != second.model_dir and first.temp_dir is not None
    finally:
        first.close()
        second.close()
    assert not first.model_dir.exists()


def test_unpacking_is_capped(tmp_path: Path) -> None:
    art = tiny_artifacts()
    with tarfile.open(art["baseline_tar"]) as tar:
        size = sum(m.size for m in tar.getmembers())
    with pytest.raises(ReviewpipeError, match="unpacks to more than"):
        package.unpack_package(art["baseline_tar"], tmp_path / "x", max_unpacked_bytes=size - 1)
    assert not (tmp_path / "x").exists()  # refused before anything was written
    assert package.unpack_package(art["baseline_tar"], tmp_path / "y", max_unpacked_bytes=size).is_dir()


def test_packages_load_only_when_registered_or_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reviewpipe import cli

    art = tiny_artifacts()
    tarball, sha256 = art["baseline_tar"], package.file_sha256(art["baseline_tar"])
    with pytest.raises(ReviewpipeError, match="not recorded in the registry at"):
        loader.verify_package(tarball, trust=False, registry_uri=str(tmp_path / "registry"))
    assert loader.verify_package(tarball, trust=False, known_sha256s={sha256}) == sha256
    assert loader.verify_package(tarball, trust=True) == sha256
    unpacked = package.unpack_package(tarball, tmp_path / "dir", max_unpacked_bytes=MAX_BYTES)
    with pytest.raises(ReviewpipeError, match="unpacked directory"):
        loader.verify_package(unpacked, trust=False, known_sha256s={sha256})
    (tmp_path / "in.jsonl").write_text('{"review_id": 1, "review_body": "love it"}\n')
    command = ["predict", "--model", str(tarball), "--input", str(tmp_path / "in.jsonl"), "--no-progress"]
    command += ["--params", str(tmp_path / "none.yaml"), "--registry", str(tmp_path / "registry")]
    assert cli.main([*command, "--output", str(tmp_path / "out")]) == 2
    assert "runs its own code when loaded" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert cli.main([*command, "--output", str(tmp_path / "out"), "--trust"]) == 0
