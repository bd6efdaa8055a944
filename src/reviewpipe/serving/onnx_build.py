"""ONNX graphs shipped inside a Hugging Face model package (built once, when packaging).

`onnx/model.onnx` is the fp32 export; `onnx/model.int8.onnx` is its static int8 quantization:
weights int8 per channel, activation scales fixed from calibration reviews (validation rows), so
what a review is served does not depend on what else shares its forward pass. Dynamic int8, in
contrast, derives activation scales from each batch and moves probabilities with the batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving import inference

QUANT_FORMATS = ("qdq", "qoperator")


@dataclass(frozen=True)
class OnnxSettings:
    """The `package.onnx` section."""

    export: bool
    calibration_rows: int
    quant_format: str

    @classmethod
    def from_mapping(cls, values: Any) -> OnnxSettings:
        settings = cls(
            export=bool(values["export"]),
            calibration_rows=int(values["calibration_rows"]),
            quant_format=str(values["quant_format"]),
        )
        if settings.quant_format not in QUANT_FORMATS:
            raise ReviewpipeError(
                f"package.onnx.quant_format must be one of {QUANT_FORMATS}, not {settings.quant_format!r}"
            )
        if settings.export and settings.calibration_rows < 1:
            raise ReviewpipeError("package.onnx.calibration_rows must be at least 1")
        return settings


@contextmanager
def _quiet() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # the quantizer logs every tensor, and advice, on root
    try:
        yield
    finally:
        root.setLevel(level)


def build_onnx(
    model_dir: str | Path, out_dir: str | Path, calibration_texts: Sequence[str], settings: OnnxSettings
) -> dict[str, Path]:
    """Write out_dir/model.onnx (fp32) and out_dir/model.int8.onnx (static int8); their paths by mode."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from transformers import AutoTokenizer

    texts = [t for t in calibration_texts if isinstance(t, str) and t.strip()][: settings.calibration_rows]
    if not texts:
        raise ReviewpipeError("no calibration reviews for the int8 graph; check package.onnx.calibration_uri")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    model = inference.load_torch_model(str(model_dir))
    fp32 = out_dir / inference.ONNX_FILES["none"]
    inference.export_onnx(model, tokenizer, str(fp32))
    limit = min(int(getattr(model.config, "max_position_embeddings", 512) or 512), 512)

    class Reviews(CalibrationDataReader):
        """One review per calibration step: no padding tokens widen the activation ranges."""

        def __init__(self) -> None:
            self.rows = iter(texts)

        def get_next(self) -> dict[str, Any] | None:
            text = next(self.rows, None)
            if text is None:
                return None
            encoded = tokenizer([text], truncation=True, max_length=limit, return_tensors="np")
            return {k: v.astype("int64") for k, v in encoded.items() if k in names}

    import onnx

    names = {i.name for i in onnx.load(str(fp32), load_external_data=False).graph.input}
    int8 = out_dir / inference.ONNX_FILES["int8"]
    with _quiet():
        quantize_static(
            str(fp32),
            str(int8) + ".tmp",
            Reviews(),
            quant_format=QuantFormat.QDQ if settings.quant_format == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=["MatMul", "Gemm"],  # the linear layers and attention products
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # MinMax: the histogram calibrators (percentile, entropy) need same-shaped samples, and
            # one review per sample (no padding in the ranges) has its own length
            calibrate_method=CalibrationMethod.MinMax,
        )
    os.replace(str(int8) + ".tmp", int8)
    return {"none": fp32, "int8": int8}
