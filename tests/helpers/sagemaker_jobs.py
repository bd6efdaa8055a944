"""What SageMaker does with a training job, done locally: moto records CreateTrainingJob but runs
nothing, so tests run the job's container contract themselves with the REAL `sagemaker-training`
toolkit (the same `train` entry a PyTorch DLC runs), from the request's own arguments:

  * /opt/ml-like tree under a temporary SAGEMAKER_BASE_DIR: input/config/hyperparameters.json (the
    request's HyperParameters, JSON-encoded strings as SageMaker writes them), resourceconfig.json
    (one host, `localhost`), inputdataconfig.json; input/data/<channel>/ downloaded from each S3 channel;
    checkpoints/ restored from CheckpointConfig.S3Uri;
  * `python -m sagemaker_training.cli.train`: the toolkit downloads sagemaker_submit_directory from
    S3, pip-installs its requirements.txt, and runs sagemaker_program with the SM_* environment;
  * afterwards model/ is tarred to <S3OutputPath>/<job>/output/model.tar.gz and checkpoints/ synced
    back to S3, as SageMaker does.

Not emulated: the DLC image itself (the toolkit runs in this venv, CPU only, SM_NUM_GPUS=0), several
hosts (torchrun across nodes), spot interruptions (tests interrupt by editing the synced checkpoints).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import boto3

# SageMaker names hosts algo-1, algo-2, ... and its DNS resolves them; the toolkit waits (up to 15
# minutes) until every host resolves, so the one local host is called what resolves here.
HOST = "localhost"


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def download_prefix(uri: str, target: Path) -> None:
    s3 = boto3.client("s3")
    bucket, prefix = _split(uri)
    prefix = prefix.rstrip("/") + "/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            path = target / obj["Key"][len(prefix) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(path))


def upload_folder(root: Path, uri: str) -> None:
    s3 = boto3.client("s3")
    bucket, prefix = _split(uri)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(root).as_posix()}")


def run_training_job(
    request: dict[str, Any], base: Path, timeout_s: float = 900
) -> subprocess.CompletedProcess:
    """Run one CreateTrainingJob request's container locally (see the module docstring)."""
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(request["HyperParameters"]))
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": HOST, "hosts": [HOST], "network_interface_name": "eth0"})
    )
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {
                name: {
                    "TrainingInputMode": "File",
                    "S3DistributionType": "FullyReplicated",
                    "RecordWrapperType": "None",
                }
                for name in channels
            }
        )
    )
    for name, channel in channels.items():
        download_prefix(channel["DataSource"]["S3DataSource"]["S3Uri"], base / "input" / "data" / name)
    checkpoints = request["CheckpointConfig"]["S3Uri"]
    download_prefix(checkpoints, base / "checkpoints")
    (base / "model").mkdir(exist_ok=True)
    (base / "output" / "data").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "TRAINING_JOB_NAME": request["TrainingJobName"]}
    env.pop("PYTHONPATH", None)  # the job imports reviewpipe from its source dir, not this checkout
    log = base / "job.log"
    with open(log, "w") as out:
        try:
            code = subprocess.run(
                [sys.executable, "-m", "sagemaker_training.cli.train"],
                cwd=base,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
            ).returncode
        except subprocess.TimeoutExpired:
            code = -9
    done = subprocess.CompletedProcess([], code, log.read_text(), "")
    upload_folder(base / "checkpoints", checkpoints)
    if done.returncode == 0:
        archive = base / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted((base / "model").iterdir()):
                tar.add(path, arcname=path.name)
        output = request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        bucket, key = _split(f"{output}/{request['TrainingJobName']}/output/model.tar.gz")
        boto3.client("s3").upload_file(str(archive), bucket, key)
    return done


def run_transform_job(request: dict[str, Any], model: Any) -> int:
    """What a Batch Transform job does with one request, through `model`, a loaded package
    (reviewpipe.serving.batch.PackagedModel: its own code/inference.py handlers): every object under
    the input prefix is split into lines (SplitType Line), lines are grouped into mini-batches of at
    most MaxPayloadInMB (BatchStrategy MultiRecord), each mini-batch goes through input_fn ->
    predict_fn -> output_fn with the request's ContentType / Accept, and the answers are joined with
    newlines (AssembleWith Line) into <S3OutputPath>/<object key relative to the prefix>.out.
    Returns the number of mini-batches sent. Not emulated: instances, concurrency, retries."""
    s3 = boto3.client("s3")
    source = request["TransformInput"]
    assert source["SplitType"] == "Line" and request["BatchStrategy"] == "MultiRecord"
    limit = int(request["MaxPayloadInMB"]) * 1024 * 1024
    bucket, prefix = _split(source["DataSource"]["S3DataSource"]["S3Uri"])
    out_bucket, out_prefix = _split(request["TransformOutput"]["S3OutputPath"])
    calls = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            lines = (
                s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode().splitlines(keepends=True)
            )
            batches: list[list[str]] = [[]]
            for line in lines:
                if batches[-1] and len("".join(batches[-1] + [line]).encode()) > limit:
                    batches.append([])
                batches[-1].append(line)
            answers = []
            for lines_ in batches:
                data = model.module.input_fn("".join(lines_).encode(), source["ContentType"])
                answers.append(
                    model.module.output_fn(
                        model.module.predict_fn(data, model.model), request["TransformOutput"]["Accept"]
                    ).decode()
                )
                calls += 1
            key = f"{out_prefix.rstrip('/')}/{obj['Key'][len(prefix.rstrip('/')) + 1 :]}.out"
            s3.put_object(Bucket=out_bucket, Key=key, Body="\n".join(answers).encode())
    return calls
