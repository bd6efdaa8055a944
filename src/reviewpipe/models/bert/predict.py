"""Class probabilities from a saved BERT directory (Hugging Face save_pretrained layout)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from reviewpipe import SENTIMENTS
from reviewpipe.errors import ReviewpipeError


class BertPredictor:
    """`predict_proba(texts) -> (n, 3)` in class order -1, 0, 1.

    Texts are tokenised once, sorted by length and batched so each batch pads only to its own
    longest text; rows are put back in input order at the end.
    """

    def __init__(
        self, path: str | Path, batch_size: int = 64, max_length: int | None = None, device: str | None = None
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").exists():
            raise ReviewpipeError(
                f"no Hugging Face model at {path} (config.json missing); "
                "train it with `dvc repro bert` or point to a save_pretrained directory."
            )
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, trust_remote_code=True
        ).eval()  # remote code: the mean-pooling head ships its modeling file
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.batch_size = batch_size
        # The training length (saved as the tokenizer's model_max_length), within the model's positions.
        positions = getattr(self.model.config, "max_position_embeddings", 512)
        self.max_length = min(max_length or self.tokenizer.model_max_length or positions, positions)
        self.column_order = self._column_order()

    def _column_order(self) -> list[int]:
        """Model output column for each sentiment in SENTIMENTS order, from the saved label map."""
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        by_label = {label: i for i, label in id2label.items()}
        try:
            return [by_label[str(s)] for s in SENTIMENTS]
        except KeyError as exc:
            raise ReviewpipeError(
                f"{self.path}/config.json id2label {id2label} lacks sentiment {exc}; expected labels "
                f"{[str(s) for s in SENTIMENTS]}."
            ) from exc

    @torch.inference_mode()
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = ["" if t is None else str(t) for t in texts]
        out = np.zeros((len(texts), len(SENTIMENTS)), dtype=np.float32)
        if not texts:
            return out
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        order = np.argsort([-len(ids) for ids in encoded], kind="stable")
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(encoded[i]) for i in rows)
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                input_ids[r, : len(encoded[i])] = torch.as_tensor(encoded[i])
                mask[r, : len(encoded[i])] = 1
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)
            ).logits
            out[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out[:, self.column_order]

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Sentiment labels (-1/0/1) with the highest probability."""
        return np.asarray(SENTIMENTS)[self.predict_proba(texts).argmax(axis=1)]
