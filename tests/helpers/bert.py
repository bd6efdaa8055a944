"""One tiny BERT for every test that needs a Hugging Face model: 1 layer, hidden size 16, the packaged
MiniLM tokenizer (so feature-store input_ids and the real tokenisation path are exercised)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ID2LABEL = {0: "-1", 1: "0", 2: "1"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}


def tiny_bert_config(vocab_size: int, **overrides: Any) -> Any:
    """A BertConfig small enough to train in seconds on a CPU (3 sentiment labels)."""
    from transformers import BertConfig

    settings: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 128,
        "num_labels": 3,
        "id2label": ID2LABEL,
        "label2id": LABEL2ID,
    }
    return BertConfig(**{**settings, **overrides})


def minilm_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from reviewpipe.hf import PACKAGED_MINILM, resolve_checkpoint

    return AutoTokenizer.from_pretrained(resolve_checkpoint(PACKAGED_MINILM))


def tiny_bert(vocab_size: int, seed: int = 0, **config: Any) -> Any:
    """A randomly initialised BertForSequenceClassification (seeded)."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(vocab_size, **config))


def save_tiny_checkpoint(path: Path, seed: int = 0, pooling: str = "cls", **config: Any) -> Path:
    """A tiny BERT (`pooling`: cls, BertForSequenceClassification; mean, the mean-pooling head) + the
    MiniLM tokenizer saved with save_pretrained: a local checkpoint directory usable as
    features.checkpoint / bert.checkpoint, or as a trained model directory."""
    tokenizer = minilm_tokenizer()
    build = {"cls": tiny_bert, "mean": tiny_mean_pooling}[pooling]
    build(tokenizer.vocab_size, seed, **config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_mean_pooling(vocab_size: int, seed: int = 0, **config: Any) -> Any:
    """The mean-pooling head (bert.pooling=mean) over a tiny encoder, seeded."""
    import torch
    from transformers import BertModel

    from reviewpipe.models.bert.modeling_mean_pooling import MeanPoolingForSequenceClassification

    torch.manual_seed(seed)
    encoder = BertModel(tiny_bert_config(vocab_size, **config), add_pooling_layer=False)
    return MeanPoolingForSequenceClassification.from_encoder(
        encoder, num_labels=3, id2label=ID2LABEL, label2id=LABEL2ID
    )
