"""Reading the prepared splits (stage prepare's contract) for training, evaluation and explanation."""

from __future__ import annotations

from typing import Any

import pandas as pd
from omegaconf import DictConfig

from reviewpipe import SENTIMENTS, storage
from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions

DEFAULT_PREPARED_DIR = "data/prepared"


def prepared_dir(params: DictConfig) -> str:
    """Where stage prepare wrote its splits (`prepare.out_dir`)."""
    prepare = params.get("prepare") or {}
    return str(prepare.get("out_dir") or DEFAULT_PREPARED_DIR)


def read_split(
    data_dir: str,
    name: str,
    options: StorageOptions | None = None,
    required: tuple[str, ...] = ("review_body", "sentiment", "label_id"),
) -> pd.DataFrame:
    """One prepared split (`train`, `validation`, `test`) as a frame, with the columns checked."""
    uri = storage.join(data_dir, f"{name}.parquet")
    storage.require_exists(
        uri, f"the prepared {name} split", "Run `reviewpipe stage prepare` (or `dvc repro prepare`).", options
    )
    fs, path = storage.get_fs(uri, options)
    with fs.open(path, "rb") as f:
        frame = pd.read_parquet(f)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ReviewpipeError(f"{uri} lacks columns {missing}; rerun `reviewpipe stage prepare`.")
    if frame.empty:
        raise ReviewpipeError(f"{uri} holds no rows; check the prepare settings and rerun it.")
    return frame.reset_index(drop=True)


def read_class_weights(data_dir: str, options: StorageOptions | None = None) -> dict[int, float]:
    """prepare's class_weights.json in `data_dir` as {label_id: weight}."""
    return class_weights_at(storage.join(data_dir, "class_weights.json"), options)


def class_weights_at(
    uri: str, options: StorageOptions | None = None, hint: str = "Run `dvc repro prepare`."
) -> dict[int, float]:
    """A class_weights.json ({"-1": w, "0": w, "1": w}, stage prepare) as {label_id: weight}."""
    storage.require_exists(uri, "class weights", hint, options)
    raw: dict[str, Any] = storage.read_json(uri, options)
    missing = [str(s) for s in SENTIMENTS if str(s) not in raw]
    if missing:
        raise ReviewpipeError(
            f"{uri} lacks weights for sentiments {missing}; expected keys "
            f"{[str(s) for s in SENTIMENTS]} (rerun `dvc repro prepare`)."
        )
    return {i: float(raw[str(s)]) for i, s in enumerate(SENTIMENTS)}
