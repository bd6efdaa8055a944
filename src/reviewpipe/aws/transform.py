"""`reviewpipe predict --engine sagemaker`: SageMaker Batch Transform on a model package.

Same input, same output layout and rejects as the local `predict` (reviewpipe.serving.batch):
  1. the input (a parquet/CSV/JSONL file or a lake table folder, local or s3://) is read in parts
     of `--part-rows` rows as the local predict reads it; bad rows are rejected by the same rules; the valid texts go to S3 as
     one JSON Lines object per part ({"inputs": text} per line: code/inference.py's contract);
  2. the package (model.tar.gz) goes to S3 content-addressed; CreateModel with the inference image,
     the package and the `serve` settings as Environment (as an endpoint would get them);
  3. CreateTransformJob: application/jsonlines, SplitType Line, BatchStrategy MultiRecord,
     MaxPayloadInMB within the 6 MB invocation contract, AssembleWith Line, Accept application/jsonlines;
  4. polls DescribeTransformJob until it ends;
  5. reads each `<part>.jsonl.out` (one prediction per input line, in order), joins it back to the
     part's ids and row numbers, and writes part-NNNNN.parquet + done markers, rejects.jsonl and
     _manifest.json exactly as the local job does.
Model and job names are digests of what they hold, so a rerun reuses a finished job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from reviewpipe import storage
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
from reviewpipe.config import section
from reviewpipe.errors import ReviewpipeError
from reviewpipe.schema import TransformParams
from reviewpipe.serving import batch
from reviewpipe.storage import StorageOptions

JSONLINES = "application/jsonlines"
PAYLOAD_LIMIT_MB = 6  # SageMaker's invocation payload limit: a mini-batch never exceeds it
DONE = ("Completed", "Failed", "Stopped")


def check_settings(settings: TransformParams) -> TransformParams:
    """`transform`, checked where the schema cannot (S3 URI, payload limit)."""
    if not settings.s3_prefix.startswith("s3://") or "CHANGE-ME" in settings.s3_prefix:
        raise ReviewpipeError(
            f"transform.s3_prefix must be your s3://bucket/prefix, not {settings.s3_prefix!r}"
        )
    if not 1 <= settings.max_payload_mb <= PAYLOAD_LIMIT_MB:
        raise ReviewpipeError(
            f"transform.max_payload_mb must be 1..{PAYLOAD_LIMIT_MB} (SageMaker's invocation limit)"
        )
    return settings


def _digest(obj: Any, length: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def input_parts(job: batch.BatchJob, options: StorageOptions | None) -> tuple[Iterator[pd.DataFrame], str]:
    """(parts of the input, its identity), read exactly as the local predict reads it (a file or a lake)."""
    fmt = batch.input_format(job.input_uri, job.input_format, options)
    parts, _ = batch.read_parts(job.input_uri, fmt, job.part_rows, [job.id_column, job.text_column], options)
    return parts, json.dumps(batch._input_identity(job.input_uri, fmt, options), sort_keys=True)


class BatchTransform(SageMakerJobs):
    """The transform job's uploads, model, request, wait and results (settings: `transform`)."""

    def upload_package(self, package: str | Path) -> str:
        from reviewpipe.serving.package import file_sha256

        path = Path(package)
        if not path.is_file() or not path.name.endswith(".tar.gz"):
            raise ReviewpipeError(
                f"--model {package}: Batch Transform needs a model.tar.gz (`dvc repro package`)"
            )
        return upload(self.s3, self._uri("models", file_sha256(path)[:16], "model.tar.gz"), path=path)

    def ensure_model(self, model_data_url: str, environment: dict[str, str]) -> str:
        container = {"Image": self.image_uri, "ModelDataUrl": model_data_url, "Environment": environment}
        name = f"reviewpipe-transform-{_digest([container, self.aws.settings.role_arn])}"
        with aws_call(f"creating model {name}"):
            try:
                self.sagemaker.describe_model(ModelName=name)
                return name
            except Exception as exc:
                if error_code(exc) != "ValidationException":
                    raise
            self.sagemaker.create_model(
                ModelName=name,
                PrimaryContainer=container,
                ExecutionRoleArn=self.aws.settings.require_role(),
                Tags=[{"Key": "reviewpipe:managed", "Value": "true"}],
            )
        print(f"predict: created SageMaker model {name}")
        return name

    def request(self, job_name: str, model_name: str, input_uri: str, output_uri: str) -> dict[str, Any]:
        """CreateTransformJob's arguments."""
        s = self.settings
        return {
            "TransformJobName": job_name,
            "ModelName": model_name,
            "MaxConcurrentTransforms": s.max_concurrent_transforms,
            "MaxPayloadInMB": s.max_payload_mb,
            "BatchStrategy": "MultiRecord",
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
                "ContentType": JSONLINES,
                "CompressionType": "None",
                "SplitType": "Line",
            },
            "TransformOutput": {"S3OutputPath": output_uri, "Accept": JSONLINES, "AssembleWith": "Line"},
            "TransformResources": {"InstanceType": s.instance_type, "InstanceCount": s.instance_count},
            "Tags": [{"Key": "reviewpipe:managed", "Value": "true"}],
        }

    def run_job(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["TransformJobName"]
        with aws_call(f"describing transform job {name}"):
            try:
                existing = self.sagemaker.describe_transform_job(TransformJobName=name)
            except Exception as exc:
                if error_code(exc) != "ValidationException":
                    raise
                existing = None
        if existing is None or existing["TransformJobStatus"] in ("Failed", "Stopped"):
            if existing is not None:
                raise ReviewpipeError(
                    f"transform job {name} {existing['TransformJobStatus']}: {existing.get('FailureReason')}; "
                    "fix the cause, then write to a new --output"
                )
            with aws_call(f"creating transform job {name}"):
                self.sagemaker.create_transform_job(**request)
            print(f"predict: created SageMaker transform job {name}")

        def describe() -> dict[str, Any]:
            with aws_call(f"describing transform job {name}"):
                return self.sagemaker.describe_transform_job(TransformJobName=name)

        described = poll(
            describe,
            lambda d: d["TransformJobStatus"],
            DONE,
            f"transform job {name}",
            self.settings.poll_delay_s,
            self.settings.timeout_s,
        )
        if described["TransformJobStatus"] != "Completed":
            raise ReviewpipeError(
                f"transform job {name} {described['TransformJobStatus']}: {described.get('FailureReason')}; "
                "its logs are in CloudWatch (/aws/sagemaker/TransformJobs)"
            )
        return described

    def read_lines(self, uri: str) -> list[dict[str, Any]]:
        bucket, key = split_s3(uri)
        with aws_call(f"reading {uri}"):
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        return [json.loads(line) for line in body.splitlines() if line.strip()]


def run_transform(
    package: str, job: batch.BatchJob, params: Any, serve_environment: dict[str, str], session: Any = None
) -> dict[str, Any]:
    """Score job.input_uri with Batch Transform into job.output_uri (the local predict's layout)."""
    job.validate()
    options = StorageOptions.from_params(params.get("storage"))
    settings = check_settings(TransformParams.from_params(params))
    transform = BatchTransform(Aws(AwsSettings.from_params(section(params, "aws")), session), settings)
    model_data = transform.upload_package(package)
    parts, identity = input_parts(job, options)
    spec = {
        k: v for k, v in asdict(job).items() if k != "output_uri"
    }  # where results land is not what they are
    key = _digest([identity, model_data, spec, serve_environment, settings.model_dump()])
    input_prefix = transform._uri("input", key)
    kept: list[tuple[pd.DataFrame, list[dict[str, Any]]]] = []
    rows = 0
    for index, part in enumerate(parts):
        valid, rejects = batch.split_rejects(part, index * job.part_rows, job.text_column, job.id_column)
        kept.append((valid, rejects))
        rows += len(part)
        if len(valid):
            body = "".join(json.dumps({"inputs": t}) + "\n" for t in valid[job.text_column])
            bucket, obj = split_s3(f"{input_prefix}/{batch.part_name(index, 'jsonl')}")
            with aws_call(f"uploading transform input part {index}"):
                transform.s3.put_object(Bucket=bucket, Key=obj, Body=body.encode("utf-8"))
    if not any(len(v) for v, _ in kept):
        raise ReviewpipeError(f"{job.input_uri}: no valid rows to score ({rows} rows, all rejected)")
    model_name = transform.ensure_model(model_data, dict(sorted(serve_environment.items())))
    output_prefix = transform._uri("output", key)
    transform.run_job(
        transform.request(f"reviewpipe-predict-{key}", model_name, input_prefix + "/", output_prefix + "/")
    )
    return write_output(transform, job, kept, output_prefix, options)


def write_output(
    transform: BatchTransform,
    job: batch.BatchJob,
    kept: list[tuple[pd.DataFrame, list[dict[str, Any]]]],
    output_prefix: str,
    options: StorageOptions | None,
) -> dict[str, Any]:
    """The transform's `<part>.jsonl.out` files -> the local predict's output files."""
    files, all_rejects, versions = [], [], set()
    for index, (valid, rejects) in enumerate(kept):
        name = None
        if len(valid):
            predictions = transform.read_lines(f"{output_prefix}/{batch.part_name(index, 'jsonl')}.out")
            if len(predictions) != len(valid):
                raise ReviewpipeError(
                    f"transform output for part {index} has {len(predictions)} predictions for {len(valid)} rows"
                )
            frame = batch.predictions_frame(valid, predictions, job.id_column)
            versions.update(frame["model_version"])
            name = batch.part_name(index, job.output_format)
            storage.write_bytes(
                storage.join(job.output_uri, name), batch._encode(frame, job.output_format), options
            )
            files.append(name)
        marker = {
            "part": index,
            "first_row": index * job.part_rows,
            "rows": len(valid) + len(rejects),
            "predicted": len(valid),
            "file": name,
            "rejects": rejects,
        }
        storage.write_bytes(
            storage.join(job.output_uri, batch.marker_name(index)),
            json.dumps(marker, default=str).encode(),
            options,
        )
        all_rejects.extend(rejects)
    storage.write_bytes(
        storage.join(job.output_uri, batch.REJECTS_FILE),
        "".join(json.dumps(r, default=str) + "\n" for r in all_rejects).encode("utf-8"),
        options,
    )
    predicted = sum(len(v) for v, _ in kept)
    manifest = {
        "parts": files,
        "rejects_file": batch.REJECTS_FILE,
        "model_version": ",".join(sorted(versions)),
        "input_uri": job.input_uri,
        "id_column": job.id_column,
        "engine": "sagemaker",
        "transform_output": output_prefix,
        "columns": [
            job.id_column,
            "row_number",
            "predicted_sentiment",
            *batch.PROBABILITY_COLUMNS.values(),
            "model_version",
        ],
        "rows": predicted + len(all_rejects),
        "predicted": predicted,
        "rejected": len(all_rejects),
        "parts_skipped": 0,
        "parts_written": len(kept),
    }
    storage.write_json(storage.join(job.output_uri, batch.MANIFEST_FILE), manifest, options)
    return manifest
