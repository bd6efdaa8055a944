"""Shared fixtures: synthetic data, moto's real S3 server on 127.0.0.1, the real dataset when present."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_RAW = REPO_ROOT / "data" / "raw" / "womens_clothing_ecommerce_reviews.csv.gz"

# Tests never reach the internet: Hugging Face must load from disk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 (and other AWS API) server on loopback; yields its endpoint URL.

    Sets the AWS environment so boto3, s3fs and DVC all talk to it and never to AWS.
    """
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    }
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(moto_server: str) -> str:
    """A fresh, empty bucket on the moto server; yields its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def real_raw() -> Path:
    """The real Kaggle file, shipped in git under data/raw/ (see its README)."""
    if not REAL_RAW.exists():
        pytest.fail(
            f"the shipped dataset is missing at {REAL_RAW}; restore it with `git checkout -- data/raw`"
        )
    return REAL_RAW


def run_data_stages(
    workdir: Path,
    raw: Path | None = None,
    stages: tuple[str, ...] = ("ingest", "catalog"),
    overrides: list[str] | None = None,
) -> Path:
    """Write params.yaml (the repository's, with relative paths) into `workdir` and run `stages` there.

    Raw input: `raw` (linked in), else a synthetic file (3,000 rows, 2 bad rows of each kind).
    Returns workdir; tests chdir into it to use the outputs."""
    from contextlib import chdir
    from importlib import import_module

    from omegaconf import OmegaConf

    from reviewpipe.config import load_params
    from reviewpipe.data.synth import write_synth

    raw_uri = "data/raw/reviews.csv.gz"
    (workdir / "data" / "raw").mkdir(parents=True, exist_ok=True)
    if raw is None:
        write_synth(str(workdir / raw_uri), rows=3000, seed=11, bad_rows=2)
    else:
        (workdir / raw_uri).symlink_to(raw)
    params = load_params(
        REPO_ROOT / "params.yaml",
        [f"data.raw_uri={raw_uri}", f"explore.sql_dir={REPO_ROOT / 'sql'}", *(overrides or [])],
    )
    OmegaConf.save(params, workdir / "params.yaml")
    with chdir(workdir):
        for stage in stages:
            import_module(f"reviewpipe.stages.{stage}").main(params)
    return workdir


@pytest.fixture(scope="session")
def synthetic_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory where ingest → catalog ran on synthetic data (params.yaml inside)."""
    return run_data_stages(tmp_path_factory.mktemp("synthetic_catalog"))


# ---- models, evaluation, explain (issue 4): tiny prepared splits with sentiment vocabulary ----
SENTIMENT_WORDS = {
    -1: ["awful", "cheap", "returned", "itchy", "ripped", "disappointed", "poor", "tight"],
    0: ["okay", "average", "fine", "decent", "mixed", "alright", "so-so", "ordinary"],
    1: ["superb", "love", "gorgeous", "perfect", "soft", "flattering", "beautiful", "comfy"],
}
FILLER_WORDS = [
    "dress",
    "top",
    "fabric",
    "size",
    "color",
    "wore",
    "ordered",
    "the",
    "this",
    "and",
    "with",
    "it",
]


def make_prepared_frame(rows: int, seed: int = 0, signal: float = 0.3) -> pd.DataFrame:  # noqa: F821
    """Prepared-contract rows: each review mixes words of its own sentiment (share `signal`) with filler;
    `superb` appears in positive reviews only (a planted word for explanation tests)."""
    import numpy as np
    import pandas as pd

    from reviewpipe.prep.bands import age_band

    rng = np.random.default_rng(seed)
    sentiment = np.resize(np.array([-1, 0, 1]), rows)
    rng.shuffle(sentiment)
    texts = []
    for s in sentiment:
        words = [
            str(rng.choice(SENTIMENT_WORDS[s])) if rng.random() < signal else str(rng.choice(FILLER_WORDS))
            for _ in range(int(rng.integers(5, 10)))
        ]
        if s == 1 and rng.random() < 0.5:
            words.insert(int(rng.integers(0, len(words))), "superb")
        texts.append(" ".join(words).capitalize() + ".")
    ages = pd.Series(rng.integers(18, 80, rows))
    categories = rng.choice(["Dresses", "Knits", "Pants"], size=rows)
    return pd.DataFrame(
        {
            "review_id": np.arange(rows),
            "review_body": texts,
            "product_category": categories,
            "division_name": rng.choice(["General", "General Petite"], size=rows),
            "department_name": np.where(
                categories == "Pants", "Bottoms", np.where(categories == "Knits", "Tops", "Dresses")
            ),
            "age": ages,
            "age_band": age_band(ages, [0, 25, 35, 45, 55, 65, 200]),
            "sentiment": sentiment,
            "label_id": sentiment + 1,
        }
    )


@pytest.fixture
def prepared_splits(tmp_path: Path) -> Path:
    """data/prepared/{train,validation,test,unbalanced}.parquet + class_weights.json under tmp_path (which
    it returns)."""
    import json

    import pandas as pd

    out = tmp_path / "data" / "prepared"
    out.mkdir(parents=True)
    splits = []
    for i, (name, rows) in enumerate((("train", 300), ("validation", 60), ("test", 90))):
        splits.append(make_prepared_frame(rows, seed=i).assign(split_type=name))
        splits[-1].to_parquet(out / f"{name}.parquet", index=False)
    # prepare's rows before balancing (here nothing was balanced away: the same rows).
    pd.concat(splits, ignore_index=True).to_parquet(out / "unbalanced.parquet", index=False)
    (out / "class_weights.json").write_text(json.dumps({"-1": 1.0, "0": 1.0, "1": 1.0}))
    return tmp_path
