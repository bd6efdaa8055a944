"""SageMaker model packages: layout, reproducibility, the self-contained code/inference.py contract,
and the `package` stage. Tiny artifacts: a TF-IDF + LogReg pipeline and a 2-layer random BERT."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from reviewpipe import registry
from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving import inference, package
from tests.helpers.bert import save_tiny_checkpoint
from tests.helpers.params import conf_section
from tests.test_registry import evaluated, register_params  # noqa: F401  (evaluated is a fixture)

ROOT = Path(__file__).resolve().parents[1]
TRAIN_TEXTS = ["love this dress, great fit", "awful fabric, terrible fit", "it is okay, nothing special"] * 10
TRAIN_LABELS = [1, -1, 0] * 10
MAX_BYTES = 1 << 30


@functools.cache
def tiny_artifacts() -> dict[str, Path]:
    """Built once per test process (shared by test_package*/test_serve*): models and their tarballs."""
    import joblib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    root = Path(tempfile.mkdtemp(prefix="reviewpipe-test-models-"))
    baseline = root / "baseline" / "model.joblib"
    baseline.parent.mkdir()
    joblib.dump(
        make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TRAIN_TEXTS, TRAIN_LABELS), baseline
    )

    bert = root / "bert"
    # 2 layers, hidden 32, an odd intermediate size: quantization handles uneven shapes
    save_tiny_checkpoint(
        bert, hidden_size=32, num_hidden_layers=2, intermediate_size=37, max_position_embeddings=64
    )

    package.build_package(bert, root / "pkg" / "model.tar.gz", model_name="bert", model_version="bert-v7")
    package.build_package(baseline, root / "pkg" / "baseline.tar.gz", model_name="baseline")
    return {
        "root": root,
        "bert": bert,
        "baseline": baseline,
        "bert_tar": root / "pkg" / "model.tar.gz",
        "baseline_tar": root / "pkg" / "baseline.tar.gz",
    }


def test_hf_tarball_has_the_sagemaker_layout() -> None:
    art = tiny_artifacts()
    with tarfile.open(art["bert_tar"]) as tar:
        names = set(tar.getnames())
        info = json.load(tar.extractfile("model_info.json"))  # type: ignore[arg-type]
        requirements = tar.extractfile("code/requirements.txt").read().decode()  # type: ignore[union-attr]
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "code/inference.py",
        "code/requirements.txt",
        "model_info.json",
    } <= names
    assert all("/" not in n or n.startswith("code/") for n in names)  # save_pretrained files at the root
    assert (
        info["model_version"] == "bert-v7" and info["kind"] == "huggingface" and info["labels"] == [-1, 0, 1]
    )
    assert "transformers==" in requirements


def test_baseline_tarball_has_joblib_at_root_and_same_code() -> None:
    art = tiny_artifacts()
    with tarfile.open(art["baseline_tar"]) as tar:
        names = set(tar.getnames())
        code = tar.extractfile("code/inference.py").read()  # type: ignore[union-attr]
        info = json.load(tar.extractfile("model_info.json"))  # type: ignore[arg-type]
    assert names == {"model.joblib", "model_info.json", "code/inference.py", "code/requirements.txt"}
    assert code == package.INFERENCE_SOURCE.read_bytes()
    assert info["kind"] == "sklearn" and info["model_version"].startswith("baseline-")


def test_tarballs_are_reproducible(tmp_path: Path) -> None:
    art = tiny_artifacts()
    package.build_package(art["baseline"], tmp_path / "a.tar.gz", model_name="baseline")
    package.build_package(art["baseline"], tmp_path / "b.tar.gz", model_name="baseline")
    assert package.file_sha256(tmp_path / "a.tar.gz") == package.file_sha256(tmp_path / "b.tar.gz")
    assert package.file_sha256(tmp_path / "a.tar.gz") == package.file_sha256(art["baseline_tar"])


def test_inference_code_imports_nothing_from_reviewpipe() -> None:
    tree = ast.parse(package.INFERENCE_SOURCE.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= {
        "__future__",
        "json",
        "os",
        "typing",
        "numpy",
        "joblib",
        "torch",
        "transformers",
        "onnxruntime",
        "tempfile",
        "threading",
        "logging",
        "warnings",
        "pandas",
        "autogluon",
    }


def test_tarball_runs_where_reviewpipe_cannot_be_imported(tmp_path: Path) -> None:
    """What SageMaker does: unpack, import code/inference.py alone, run the four functions."""
    art = tiny_artifacts()
    with tarfile.open(art["baseline_tar"]) as tar:
        tar.extractall(tmp_path, filter="data")
    script = f"""
import sys, importlib.abc, importlib.util, json
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'reviewpipe':
            raise ImportError('reviewpipe is not installed in the container')
sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location('inference', {str(tmp_path / "code" / "inference.py")!r})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
model = m.model_fn({str(tmp_path)!r})
data = m.input_fn(b'{{"inputs": ["love this dress", "awful fabric"]}}', 'application/json')
print(m.output_fn(m.predict_fn(data, model), 'application/json').decode())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert [p["label"] for p in body["predictions"]] == [1, -1]
    assert body["model_version"].startswith("baseline-")


def test_input_fn_contract() -> None:
    assert inference.input_fn(b'{"inputs": "nice"}', "application/json")["texts"] == ["nice"]
    assert inference.input_fn('{"inputs": ["a", "b"]}', "application/json; charset=utf-8")["texts"] == [
        "a",
        "b",
    ]
    lines = inference.input_fn(b'{"inputs": "a"}\n\n{"inputs": ["b", "c"]}\n', "application/jsonlines")
    assert lines == {"texts": ["a", "b", "c"], "content_type": "application/jsonlines"}
    cases = [
        (b"{nope", "application/json", 400, "malformed JSON"),
        (b'{"inputs": ""}', "application/json", 400, "empty"),
        (b'{"inputs": "  "}', "application/json", 400, "empty"),
        (b'{"inputs": []}', "application/json", 400, "non-empty"),
        (b'{"inputs": [1]}', "application/json", 400, "int"),
        (b'{"text": "a"}', "application/json", 400, '"inputs"'),
        (b'{"inputs": "a"}\n{bad', "application/jsonlines", 400, "line 2"),
        (b"", "application/jsonlines", 400, "empty JSON Lines"),
        (b"\xff\xfe", "application/json", 400, "UTF-8"),
        (b"a,b", "text/csv", 415, "unsupported content type"),
    ]
    for body, content_type, status, message in cases:
        with pytest.raises(inference.RequestError, match=message) as caught:
            inference.input_fn(body, content_type)
        assert caught.value.status == status, body


def test_predict_and_output_for_both_kinds(tmp_path: Path) -> None:
    art = tiny_artifacts()
    baseline_dir = package.unpack_package(art["baseline_tar"], tmp_path / "b", max_unpacked_bytes=MAX_BYTES)
    bert_dir = package.unpack_package(art["bert_tar"], tmp_path / "h", max_unpacked_bytes=MAX_BYTES)
    for model_dir, version in ((baseline_dir, "baseline-"), (bert_dir, "bert-v7")):
        model = inference.model_fn(str(model_dir))
        prediction = inference.predict_fn({"texts": ["love this dress", "awful fabric", "okay"]}, model)
        rows = prediction["predictions"]
        assert len(rows) == 3 and all(r["label"] in (-1, 0, 1) for r in rows)
        assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)
        assert all(
            set(r["probabilities"]) == {"-1", "0", "1"} and r["model_version"].startswith(version)
            for r in rows
        )
        as_lines = inference.output_fn({**prediction, "variant": "v"}, "application/jsonlines").decode()
        assert [json.loads(line)["variant"] for line in as_lines.splitlines()] == ["v", "v", "v"]
        with pytest.raises(inference.RequestError) as caught:
            inference.output_fn(prediction, "text/csv")
        assert caught.value.status == 406
    baseline = inference.model_fn(str(baseline_dir))
    assert [
        r["label"] for r in inference.predict_fn({"texts": TRAIN_TEXTS[:3]}, baseline)["predictions"]
    ] == TRAIN_LABELS[:3]


def test_sklearn_pipelines_fit_on_class_ids_map_to_labels(tmp_path: Path) -> None:
    import joblib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    ids = [i + 1 for i in TRAIN_LABELS]  # 0/1/2, as the baseline stage trains
    joblib.dump(
        make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TRAIN_TEXTS, ids), tmp_path / "m.joblib"
    )
    package.build_package(tmp_path / "m.joblib", tmp_path / "b.tar.gz", model_name="baseline")
    model = inference.model_fn(
        str(package.unpack_package(tmp_path / "b.tar.gz", tmp_path / "u", max_unpacked_bytes=MAX_BYTES))
    )
    assert [
        r["label"] for r in inference.predict_fn({"texts": TRAIN_TEXTS[:3]}, model)["predictions"]
    ] == TRAIN_LABELS[:3]
    two_classes = [i for i in ids if i != 2]  # a class unseen in training gets probability 0
    texts = [t for t, i in zip(TRAIN_TEXTS, ids, strict=True) if i != 2]
    joblib.dump(
        make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, two_classes), tmp_path / "m.joblib"
    )
    model = inference.SklearnModel(str(tmp_path / "m.joblib"))
    probs = model.predict_proba(["love this dress, great fit", "awful fabric"])
    assert probs.shape == (2, 3) and (probs[:, 2] == 0).all() and probs[1].argmax() == 0


def test_long_texts_are_truncated_not_rejected(tmp_path: Path) -> None:
    art = tiny_artifacts()
    model = inference.model_fn(
        str(package.unpack_package(art["bert_tar"], tmp_path / "h", max_unpacked_bytes=MAX_BYTES))
    )
    assert model.max_length == 64  # the tiny model's position embeddings
    long_text = "this dress is lovely " * 2000
    probs = model.predict_proba([long_text, long_text[:400]])
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)  # both cut to the same 64 tokens


def test_forward_passes_group_similar_lengths(tmp_path: Path) -> None:
    art = tiny_artifacts()
    model = inference.model_fn(
        str(package.unpack_package(art["bert_tar"], tmp_path / "h", max_unpacked_bytes=MAX_BYTES))
    )
    model.batch_size = 4
    lengths = [10, 11, 12, 50, 52, 9, 10, 10, 10, 10, 200]
    chunks = model.chunks(lengths)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(lengths)))
    for chunk in chunks:
        sizes = [lengths[i] for i in chunk]
        assert len(chunk) <= 4 and len(chunk) * max(sizes) <= 1.15 * sum(sizes)
    assert [3, 4] in chunks and [10] in chunks  # long reviews never pad the short ones
    # batched (grouped, padded) predictions equal one-by-one predictions
    texts = ["short", "a much longer review about the fit and the fabric of this dress", "ok"] * 3
    together = model.predict_proba(texts)
    alone = np.vstack([model.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_int8_quantisation_replaces_linear_layers_and_stays_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = tiny_artifacts()
    model_dir = str(package.unpack_package(art["bert_tar"], tmp_path / "h", max_unpacked_bytes=MAX_BYTES))
    texts = ["love this dress", "awful fabric, returned it", "it is fine I guess"] * 4
    reference = inference.model_fn(model_dir).predict_proba(texts)
    monkeypatch.setenv("REVIEWPIPE_QUANTIZE", "int8-dynamic")
    quantized = inference.model_fn(model_dir)
    assert any("quantized" in type(m).__module__ for m in quantized.model.modules())
    np.testing.assert_allclose(quantized.predict_proba(texts), reference, atol=0.05)


def test_onnx_backend_matches_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    art = tiny_artifacts()
    model_dir = str(package.unpack_package(art["bert_tar"], tmp_path / "h", max_unpacked_bytes=MAX_BYTES))
    texts = ["love this dress", "awful fabric, returned it", "fine " * 200]
    reference = inference.model_fn(model_dir).predict_proba(texts)
    monkeypatch.setenv("REVIEWPIPE_BACKEND", "onnx")
    onnx_model = inference.model_fn(model_dir)
    assert (tmp_path / "h" / "onnx" / "model.onnx").exists()  # exported once, cached beside the model
    np.testing.assert_allclose(onnx_model.predict_proba(texts), reference, atol=1e-4)
    monkeypatch.setenv("REVIEWPIPE_QUANTIZE", "int8-dynamic")
    np.testing.assert_allclose(inference.model_fn(model_dir).predict_proba(texts), reference, atol=0.05)


def test_unpack_rejects_what_is_not_a_package(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(ReviewpipeError, match="no code/inference.py"):
        package.unpack_package(tmp_path / "plain", max_unpacked_bytes=MAX_BYTES)
    (tmp_path / "x.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(ReviewpipeError, match="not a model.tar.gz"):
        package.unpack_package(tmp_path / "x.tar.gz", max_unpacked_bytes=MAX_BYTES)
    with pytest.raises(ReviewpipeError, match="neither a .joblib"):
        package.model_kind(tmp_path / "plain")


def test_package_stage_ships_the_deployable_registry_version(tmp_path: Path) -> None:
    """package copies the newest Approved version's stored tarball (not the model path), sha256-checked."""
    from reviewpipe.stages import package as package_stage
    from tests.test_registry import register_package

    art = tiny_artifacts()
    reg = registry.Registry(str(tmp_path / "registry"))
    for name, kind, status in (
        ("bert", "huggingface", registry.APPROVED),
        ("baseline", "sklearn", registry.APPROVED),
        ("bert", "huggingface", registry.REJECTED),
    ):
        built = tmp_path / "build" / f"{name}.tar.gz"
        package.build_package(art[name], built, model_name=name)
        register_package(reg, built, name, status, kind)
    conf = conf_section("package")
    conf.out_dir, conf.registry_uri = str(tmp_path / "out"), str(tmp_path / "registry")
    conf.versions = {"model": "deployable", "first": 1}
    conf.calibration_uri = None  # calibrated packages: tests/test_serving_calibration.py
    params = OmegaConf.create({"storage": {}, "package": conf})
    package_stage.main(params)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["registry"] == {
        "uri": str(tmp_path / "registry"),
        "version": 2,
        "status": "Approved",
    }
    assert manifest["model"]["model_name"] == "baseline" and manifest["model"]["kind"] == "sklearn"
    assert manifest["first"]["registry"]["version"] == 1 and manifest["first"]["kind"] == "huggingface"
    tarball = tmp_path / "out" / "model.tar.gz"
    assert (
        manifest["model"]["sha256"] == hashlib.sha256(tarball.read_bytes()).hexdigest() == reg.get(2).sha256
    )
    assert tarball.read_bytes() == (tmp_path / "build" / "baseline.tar.gz").read_bytes()


def test_register_builds_the_champions_package_with_the_package_settings(
    evaluated: Path,  # noqa: F811
) -> None:
    """The tarball register stores (and package later ships) is built with conf/package's settings:
    ONNX graphs with static int8 calibrated on validation reviews, the SageMaker target's requirements."""
    import pandas as pd

    from reviewpipe.stages import register as register_stage

    art = tiny_artifacts()
    pd.DataFrame({"review_body": TRAIN_TEXTS}).to_parquet(evaluated / "validation.parquet")
    reg = registry.Registry(str(evaluated / "registry"))
    for champion in ("bert", "baseline"):
        params = OmegaConf.merge(
            register_params(evaluated, candidates=[champion]),
            {
                "register": {"model_paths": {"bert": str(art["bert"]), "baseline": str(art["baseline"])}},
                "package": {
                    "onnx": {
                        "export": True,
                        "calibration_uri": str(evaluated / "validation.parquet"),
                        "calibration_rows": 8,
                    }
                },
            },
        )
        register_stage.main(params)
    bert, baseline = reg.get(1), reg.get(2)
    with tarfile.open(bert.package["uri"]) as tar:
        names = set(tar.getnames())
        info = json.load(tar.extractfile("model_info.json"))  # type: ignore[arg-type]
    assert {"onnx/model.onnx", "onnx/model.int8.onnx"} <= names and info["onnx"]["calibration_rows"] == 8
    # the image has torch + transformers: nothing to pip install at container start
    assert "code/requirements.txt" not in names and info["sagemaker"]["python"] == "3.12"
    with tarfile.open(baseline.package["uri"]) as tar:
        assert "scikit-learn==" in tar.extractfile("code/requirements.txt").read().decode()  # type: ignore[union-attr]
