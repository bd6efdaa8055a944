"""`reviewpipe predict --engine sagemaker` against moto's server: CreateModel + CreateTransformJob
read back with Describe*, and the results read into the local predict's output layout.

moto records the model and the job (DescribeTransformJob says Completed at once) but transforms
nothing, so the test does what the transform job's container does with the request itself
(tests/helpers/sagemaker_jobs.run_transform_job: split by line, mini-batches within MaxPayloadInMB,
the package's own input_fn/predict_fn/output_fn, outputs assembled by line). The SageMaker-side
behaviours this cannot check: the inference DLC loading the package, instances, concurrency, retries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from omegaconf import OmegaConf

from reviewpipe import cli
from reviewpipe.config import load_params, to_dict
from reviewpipe.data import lake
from reviewpipe.serving import batch
from reviewpipe.serving.server import ServeSettings
from tests.conftest import REPO_ROOT
from tests.helpers.aws_calls import Recorder, record_clients
from tests.helpers.sagemaker_jobs import run_transform_job
from tests.test_aws_training import ROLE
from tests.test_deploy_sagemaker import baseline_packages


@pytest.fixture
def transform_calls(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Records SageMaker requests; runs each created transform job through the package."""
    loaded: dict[str, Any] = {}

    def run_job(**_: Any) -> None:
        request = recorder.named("CreateTransformJob")[-1]
        model = boto3.client("sagemaker").describe_model(ModelName=request["ModelName"])
        bucket, key = model["PrimaryContainer"]["ModelDataUrl"].removeprefix("s3://").split("/", 1)
        tarball = loaded["dir"] / "model.tar.gz"
        boto3.client("s3").download_file(bucket, key, str(tarball))
        packaged = batch.PackagedModel(tarball, loaded["serve"])
        try:
            loaded.setdefault("batches", []).append(run_transform_job(request, packaged))
        finally:
            packaged.close()

    recorder = record_clients(
        monkeypatch, ("sagemaker",), {"after-call.sagemaker.CreateTransformJob": run_job}
    )
    recorder.loaded = loaded  # type: ignore[attr-defined]
    return recorder


def write_params(tmp_path: Path, bucket: str) -> tuple[Path, Any]:
    params = to_dict(load_params(REPO_ROOT / "params.yaml"))
    params["transform"].update({"s3_prefix": f"s3://{bucket}/transform", "poll_delay_s": 0.01})
    params["aws"].update({"region": "us-east-1", "role_arn": ROLE})
    path = tmp_path / "params.yaml"
    OmegaConf.save(OmegaConf.create(params), path)
    return path, params


def reviews_input(path: Path) -> pd.DataFrame:
    texts = ["love it, so soft", "awful fabric, returned", "it is ok", "", None, "perfect fit"] * 4
    frame = pd.DataFrame({"review_id": range(len(texts)), "review_body": texts})
    frame.loc[7, "review_id"] = None
    frame.to_parquet(path, index=False)
    return frame


def test_batch_transform_writes_what_local_predict_writes(
    tmp_path: Path, s3_bucket: str, transform_calls: Recorder
) -> None:
    params_path, params = write_params(tmp_path, s3_bucket)
    transform_calls.loaded.update(  # type: ignore[attr-defined]
        {"dir": tmp_path, "serve": ServeSettings.from_mapping(params["serve"])}
    )
    package = baseline_packages(tmp_path / "pkg", ("model",))["model"]
    source = tmp_path / "reviews.parquet"
    reviews_input(source)
    common = [
        "predict",
        "--model",
        str(package),
        "--input",
        str(source),
        "--part-rows",
        "10",
        "--params",
        str(params_path),
        "--trust",
    ]
    assert cli.main([*common, "--output", str(tmp_path / "local"), "--no-progress"]) == 0
    assert cli.main([*common, "--output", str(tmp_path / "sm"), "--engine", "sagemaker"]) == 0

    local, remote = tmp_path / "local", tmp_path / "sm"
    pd.testing.assert_frame_equal(batch.read_output(str(remote)), batch.read_output(str(local)))
    assert (remote / batch.REJECTS_FILE).read_text() == (local / batch.REJECTS_FILE).read_text()
    assert len((local / batch.REJECTS_FILE).read_text().splitlines()) == 9  # 4 empty, 4 None, 1 missing id
    for index in range(3):
        name = batch.marker_name(index)
        assert json.loads((remote / name).read_text()) == json.loads((local / name).read_text())
    manifest = json.loads((remote / batch.MANIFEST_FILE).read_text())
    assert (manifest["predicted"], manifest["rejected"], manifest["parts"]) == (
        15,
        9,
        ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"],
    )

    # The requests, as SageMaker (moto) stored them.
    sm = boto3.client("sagemaker", region_name="us-east-1")
    (job,) = transform_calls.named("CreateTransformJob")
    described = sm.describe_transform_job(TransformJobName=job["TransformJobName"])
    assert described["TransformInput"]["ContentType"] == "application/jsonlines"
    assert described["TransformInput"]["SplitType"] == "Line"
    assert described["MaxPayloadInMB"] == 6 and described["BatchStrategy"] == "MultiRecord"
    assert described["TransformOutput"]["AssembleWith"] == "Line"
    assert described["TransformOutput"]["Accept"] == "application/jsonlines"
    assert described["TransformResources"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}
    model = sm.describe_model(ModelName=described["ModelName"])
    assert model["ExecutionRoleArn"] == ROLE
    container = model["PrimaryContainer"]
    assert container["Image"].startswith(
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference"
    )
    assert container["ModelDataUrl"].startswith(f"s3://{s3_bucket}/transform/models/")
    # The serve settings the local predict uses (--batch-size 64 by default), as the endpoint would get
    # them: the container's torch backend (no onnxruntime in the image) at transform.quantize.
    expected = ServeSettings.from_mapping(params["serve"], max_batch_size=64).container_environment("none")
    assert container["Environment"] == expected
    assert (expected["REVIEWPIPE_BACKEND"], expected["REVIEWPIPE_QUANTIZE"]) == ("torch", "none")
    inputs = boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix="transform/input/")["Contents"]
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in inputs) == [
        "part-00000.jsonl",
        "part-00001.jsonl",
        "part-00002.jsonl",
    ]
    assert transform_calls.loaded["batches"] == [3]  # type: ignore[attr-defined]  # one mini-batch per part

    # A rerun reuses the finished job.
    transform_calls.log.clear()
    assert cli.main([*common, "--output", str(tmp_path / "sm2"), "--engine", "sagemaker"]) == 0
    assert transform_calls.named("CreateTransformJob") == [] and transform_calls.named("CreateModel") == []


def test_batch_transform_scores_a_lake(tmp_path: Path, s3_bucket: str, transform_calls: Recorder) -> None:
    params_path, params = write_params(tmp_path, s3_bucket)
    transform_calls.loaded.update(  # type: ignore[attr-defined]
        {"dir": tmp_path, "serve": ServeSettings.from_mapping(params["serve"])}
    )
    package = baseline_packages(tmp_path / "pkg", ("model",))["model"]
    frame = pd.DataFrame(
        {
            "review_id": range(30),
            "review_body": ["soft and lovely", "itchy", "fine"] * 10,
            "product_category": ["Dresses", "Knits", None] * 10,
        }
    )
    lake.publish_table(f"s3://{s3_bucket}/lake", "reviews", frame, "product_category")
    out = tmp_path / "scored"
    args = [
        "predict",
        "--model",
        str(package),
        "--input",
        f"s3://{s3_bucket}/lake/reviews",
        "--output",
        str(out),
        "--trust",
    ]
    assert cli.main([*args, "--engine", "sagemaker", "--params", str(params_path), "--part-rows", "100"]) == 0
    scored = batch.read_output(str(out))
    assert scored["review_id"].tolist() == list(range(30)) and scored["row_number"].tolist() == list(
        range(30)
    )
    assert set(scored["predicted_sentiment"]) <= {-1, 0, 1}
