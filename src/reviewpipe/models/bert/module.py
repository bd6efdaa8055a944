"""The BERT sentiment classifier as a LightningModule around a Hugging Face sequence classifier.

The network is built outside (lightning-hydra-template style) and passed in, so tests can hand in a
tiny model; `build_network` makes the configured one (the packaged MiniLM, any HF name or local path).
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from reviewpipe import SENTIMENTS
from reviewpipe.errors import ReviewpipeError
from reviewpipe.hf import resolve_checkpoint

ID2LABEL: dict[int, str] = {i: str(s) for i, s in enumerate(SENTIMENTS)}
LABEL2ID: dict[str, int] = {label: i for i, label in ID2LABEL.items()}
NUM_LABELS = len(SENTIMENTS)


POOLINGS = ("cls", "mean")


def build_network(checkpoint: str, pooling: str = "cls") -> nn.Module:
    """A 3-way sequence classifier with the project's label map on the checkpoint's encoder.

    `cls`: AutoModelForSequenceClassification (the architecture's own [CLS] head; a checkpoint with a
    head of another size, e.g. a 2-class sentiment model, gets a new one). `mean`: a head on the
    attention-masked mean of the token states, the pooling sentence-embedding checkpoints such as
    the packaged MiniLM were trained for (saved as remote code: loaders pass trust_remote_code).
    """
    from transformers import AutoModel, AutoModelForSequenceClassification

    labels = {"num_labels": NUM_LABELS, "id2label": ID2LABEL, "label2id": LABEL2ID}
    path = resolve_checkpoint(checkpoint)
    if pooling == "cls":
        network = AutoModelForSequenceClassification.from_pretrained(
            path, ignore_mismatched_sizes=True, **labels
        )
    elif pooling == "mean":
        from reviewpipe.models.bert.modeling_mean_pooling import (
            MeanPoolingForSequenceClassification,
            without_pooler,
        )

        network = MeanPoolingForSequenceClassification.from_encoder(
            without_pooler(AutoModel.from_pretrained, path), **labels
        )
    else:
        raise ReviewpipeError(
            f"bert.pooling must be one of {POOLINGS}, not {pooling!r}; set it in "
            "conf/bert/cpu.yaml or with `dvc exp run -S bert.pooling=mean`"
        )
    # from_pretrained returns the model in eval mode and Lightning keeps submodule modes as found,
    # so without this dropout would stay off during fine-tuning.
    return network.train()


def freeze_bottom(network: nn.Module, layers: int) -> None:
    """Stop updating the encoder's embeddings and its bottom `layers` transformer layers.

    Backpropagation then stops at the first trainable layer, so each frozen layer saves its share of
    the backward pass (two thirds of a layer's training compute) as well as its AdamW update.
    """
    modules = dict(network.named_modules())
    stacks = [
        n
        for n, m in modules.items()
        if isinstance(m, nn.ModuleList) and n.rsplit(".", 1)[-1] in ("layer", "layers")
    ]
    embeddings = [n for n in modules if n.rsplit(".", 1)[-1] == "embeddings"]
    if len(stacks) != 1 or len(embeddings) != 1:
        raise ReviewpipeError(
            f"bert.freeze_layers={layers}: cannot find one embeddings module and one stack of encoder "
            f"layers in {type(network).__name__} (found {len(embeddings)} and {stacks}); "
            "set bert.freeze_layers=0 for this checkpoint"
        )
    stack = modules[stacks[0]]
    if not 0 < layers < len(stack):
        raise ReviewpipeError(
            f"bert.freeze_layers must be between 0 and {len(stack) - 1} for this checkpoint "
            f"({len(stack)} encoder layers), not {layers}; set it in conf/bert/"
        )
    modules[embeddings[0]].requires_grad_(False)
    for layer in stack[:layers]:
        layer.requires_grad_(False)


def decay_parameter_groups(network: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices only, never on biases or LayerNorm."""
    decay, no_decay = [], []
    for name, param in network.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class SentimentClassifier(L.LightningModule):
    """Fine-tunes `network` on (input_ids, attention_mask, labels) batches with AdamW + linear warm-up/decay."""

    def __init__(
        self,
        network: nn.Module,
        *,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        class_weights: list[float] | None = None,
        freeze_word_embeddings: bool = False,
        freeze_layers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["network"], logger=False)
        self.network = network
        if freeze_word_embeddings:
            # Half of MiniLM's parameters are the word embeddings; not updating them saves their
            # gradient and AdamW work each step, at little cost in accuracy for a small label set.
            network.get_input_embeddings().weight.requires_grad_(False)
        if freeze_layers:
            freeze_bottom(network, freeze_layers)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.val_accuracy = MulticlassAccuracy(NUM_LABELS, average="micro")
        self.val_macro_f1 = MulticlassF1Score(NUM_LABELS, average="macro")
        self.test_accuracy = MulticlassAccuracy(NUM_LABELS, average="micro")
        self.test_macro_f1 = MulticlassF1Score(NUM_LABELS, average="macro")

    def on_train_start(self) -> None:
        # from_pretrained returns the network in eval mode and Lightning keeps a module's mode as it
        # finds it, so without this dropout would stay off for the whole fine-tuning.
        self.network.train()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.network(input_ids=input_ids, attention_mask=attention_mask).logits

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = F.cross_entropy(logits.float(), batch["labels"], weight=self.class_weights)
        return loss, logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["labels"])
        )
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_accuracy, self.val_macro_f1)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_accuracy, self.test_macro_f1)

    def _evaluate(
        self,
        batch: dict[str, torch.Tensor],
        stage: str,
        accuracy: MulticlassAccuracy,
        macro_f1: MulticlassF1Score,
    ) -> None:
        loss, logits = self._step(batch)
        n = len(batch["labels"])
        accuracy(logits, batch["labels"])
        macro_f1(logits, batch["labels"])
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=n)
        self.log(f"{stage}/accuracy", accuracy, on_epoch=True, batch_size=n)
        self.log(f"{stage}/macro_f1", macro_f1, on_epoch=True, prog_bar=stage == "val", batch_size=n)

    def configure_optimizers(self) -> dict[str, Any]:
        from transformers import get_linear_schedule_with_warmup

        hp = self.hparams
        # The fused kernel: on CPU, AdamW over MiniLM's 23M weights takes ~0.06 s a step instead of ~0.4 s.
        optimizer = torch.optim.AdamW(
            decay_parameter_groups(self.network, hp.weight_decay),
            lr=hp.learning_rate,
            fused=self.device.type in ("cpu", "cuda"),
        )
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_linear_schedule_with_warmup(
            optimizer,
            num_warmup_steps=int(round(hp.warmup_ratio * total_steps)),
            num_training_steps=total_steps,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # Random-number states travel with the checkpoint so a resumed run draws the same dropout masks
    # as an uninterrupted one (Lightning restores weights, optimizer, scheduler and loops, not RNGs).
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        # Plain tensors and numbers only: checkpoints stay loadable with torch.load(weights_only=True).
        states: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        }
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["rng_states"] = states

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            return
        torch.set_rng_state(states["torch"])
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(states["python"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
