"""deploy.target=sagemaker: S3 upload, create_model, create_endpoint_config (ProductionVariants
with weights), create_endpoint, wait for InService; weight shifts and teardown. boto3 only.

Credentials come only from the standard AWS chain (environment, shared config/profile, instance
role); nothing here reads, logs or writes them. `endpoint_url` / `s3_endpoint_url` point the
clients at S3-/SageMaker-compatible services (moto, LocalStack) instead of AWS.

Deploying is a reconciliation, so repeating it (`dvc repro`) is cheap and safe:
  * tarballs are content-addressed in S3 (`<s3_uri>/<sha256[:16]>/model.tar.gz`) and uploaded once: an
    existing object is kept only when its bytes hash to the tarball's sha256;
  * model and endpoint-config names carry a digest of what they contain, so they are created once;
  * no endpoint yet -> create_endpoint; same models, other weights -> update_endpoint_weights_and_capacities;
    other models or instances -> update_endpoint to a new config (SageMaker's blue/green), then the
    replaced config and models are deleted.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reviewpipe.aws.clients import aws_call
from reviewpipe.deploy import VariantConfig, checked_keys, now, package_info
from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving.capture import CaptureSettings
from reviewpipe.serving.server import check_container_quantize

NAME_LIMIT = 63  # SageMaker model / endpoint-config / endpoint / variant names
_VALID_NAME = re.compile(r"(?=.{1,63}$)[A-Za-z0-9](-*[A-Za-z0-9])*")  # SageMaker's own pattern
_BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed")


@dataclass(frozen=True)
class SageMakerSettings:
    """The `deploy.sagemaker` params section."""

    s3_uri: str = ""
    role_arn: str = ""
    image_uri: str = ""
    region: str | None = None
    profile: str | None = None
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    endpoint_url: str | None = None
    s3_endpoint_url: str | None = None
    wait_delay_s: float = 30.0
    wait_max_attempts: int = 120
    delete_replaced: bool = True
    tags: dict[str, str] = field(default_factory=dict)
    backend: str = "torch"  # the container has torch, not onnxruntime
    quantize: str = "none"  # none | int8-dynamic (batch-dependent: a review's result moves with its batch)

    @classmethod
    def from_mapping(cls, values: Any) -> SageMakerSettings:
        values = checked_keys(values, cls.__dataclass_fields__, "deploy.sagemaker")
        settings = cls(**{k: v for k, v in values.items() if v is not None or k in ("region", "profile")})
        if not settings.s3_uri.startswith("s3://") or len(settings.s3_uri) <= len("s3://"):
            raise ReviewpipeError(
                f"deploy.sagemaker.s3_uri must be s3://bucket/prefix, not {settings.s3_uri!r}"
            )
        if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/\S+", settings.role_arn or ""):
            raise ReviewpipeError(
                "deploy.sagemaker.role_arn must be an IAM role ARN "
                f"(arn:aws:iam::<account>:role/<name>), not {settings.role_arn!r}"
            )
        if settings.backend != "torch":
            raise ReviewpipeError(
                f"deploy.sagemaker.backend={settings.backend!r}: the SageMaker container runs torch "
                "(no onnxruntime); use backend=torch"
            )
        check_container_quantize(settings.quantize, "deploy.sagemaker.quantize")
        if not settings.image_uri:
            raise ReviewpipeError(
                "deploy.sagemaker.image_uri is empty; use the Hugging Face PyTorch "
                "inference DLC (see conf/deploy/sagemaker.yaml)"
            )
        return settings


def resource_name(*parts: str, digest: str = "") -> str:
    """A valid SageMaker name (alphanumerics and single hyphens, <= 63 chars) ending in `digest`."""
    base = re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9-]+", "-", "-".join(parts))).strip("-")
    if not digest:
        return base[:NAME_LIMIT].rstrip("-")
    return f"{base[: NAME_LIMIT - len(digest) - 1].rstrip('-')}-{digest}"


def _digest(obj: Any, length: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def _aws(what: str) -> AbstractContextManager[None]:
    """AWS failures as user errors that say what failed (never with credentials in them)."""
    return aws_call(what, settings="deploy.sagemaker")


def _not_found(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    return error.get("Code") in ("ValidationException", "404", "NoSuchKey", "NotFound") and (
        error.get("Code") != "ValidationException" or "Could not find" in str(error.get("Message"))
    )


class SageMakerDeployer:
    """One region's S3 + SageMaker clients from one boto3 session (the standard credential chain)."""

    def __init__(
        self, settings: SageMakerSettings, session: Any = None, s3_endpoint_url: str | None = None
    ) -> None:
        import boto3

        self.settings = settings
        with _aws("opening an AWS session"):
            self.session = session or boto3.Session(
                profile_name=settings.profile or None, region_name=settings.region or None
            )
            self.region = settings.region or self.session.region_name
            if not self.region:
                raise ReviewpipeError("no AWS region: set deploy.sagemaker.region or AWS_DEFAULT_REGION")
            self.sagemaker = self.session.client(
                "sagemaker", region_name=self.region, endpoint_url=settings.endpoint_url or None
            )
            self.s3 = self.session.client(
                "s3",
                region_name=self.region,
                endpoint_url=settings.s3_endpoint_url or s3_endpoint_url or None,
            )

    @property
    def image_uri(self) -> str:
        return self.settings.image_uri.format(region=self.region)

    def _tags(self) -> list[dict[str, str]]:
        return [
            {"Key": "reviewpipe:managed", "Value": "true"},
            *({"Key": str(k), "Value": str(v)} for k, v in sorted(self.settings.tags.items())),
        ]

    # ------------------------------------------------------------ S3

    def upload(self, tarball: str | Path, info: dict[str, Any] | None = None) -> str:
        """Upload a model.tar.gz to `<s3_uri>/<sha256[:16]>/model.tar.gz` unless the object there
        already holds exactly these bytes (its content is hashed: metadata can say anything); its URI."""
        info = info or package_info(tarball)
        bucket, prefix = split_s3_uri(self.settings.s3_uri)
        key = "/".join(p for p in (prefix, info["sha256"][:16], "model.tar.gz") if p)
        uri = f"s3://{bucket}/{key}"
        with _aws(f"checking {uri}"):
            try:
                head = self.s3.head_object(Bucket=bucket, Key=key)
                if (
                    head["ContentLength"] == info["bytes"]
                    and self.object_sha256(bucket, key) == info["sha256"]
                ):
                    print(f"deploy: {tarball} already at {uri}")
                    return uri
                print(f"deploy: {uri} holds other bytes; replacing it")
            except Exception as exc:
                if not _not_found(exc):
                    raise
        with _aws(f"uploading {tarball} to {uri}"):
            self.s3.upload_file(
                str(tarball),
                bucket,
                key,
                ExtraArgs={
                    "Metadata": {"sha256": info["sha256"], "model-version": str(info["model_version"])}
                },
            )
            size = self.s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        if size != info["bytes"]:
            raise ReviewpipeError(
                f"upload of {tarball} to {uri} is {size} bytes, expected {info['bytes']}; retry"
            )
        print(f"deploy: uploaded {tarball} ({info['bytes']} bytes) to {uri}")
        return uri

    def object_sha256(self, bucket: str, key: str) -> str:
        """sha256 of an S3 object's bytes, streamed (S3's own checksums are per part for multipart
        uploads, so they cannot be compared with a file's sha256)."""
        digest = hashlib.sha256()
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
        for chunk in iter(lambda: body.read(1 << 20), b""):
            digest.update(chunk)
        return digest.hexdigest()

    # ------------------------------------------------------------ describe helpers

    def describe_endpoint(self, endpoint_name: str) -> dict[str, Any] | None:
        with _aws(f"describing endpoint {endpoint_name}"):
            try:
                return self.sagemaker.describe_endpoint(EndpointName=endpoint_name)
            except Exception as exc:
                if _not_found(exc):
                    return None
                raise

    def _exists(self, describe: Any, **kwargs: str) -> bool:
        try:
            describe(**kwargs)
            return True
        except Exception as exc:
            if _not_found(exc):
                return False
            raise

    def wait_in_service(self, endpoint_name: str) -> dict[str, Any]:
        """Block until the endpoint is InService (waiter: deploy.sagemaker.wait_delay_s / wait_max_attempts)."""
        from botocore.exceptions import WaiterError

        waiter = self.sagemaker.get_waiter("endpoint_in_service")
        with _aws(f"waiting for endpoint {endpoint_name}"):
            try:
                waiter.wait(
                    EndpointName=endpoint_name,
                    WaiterConfig={
                        "Delay": self.settings.wait_delay_s,
                        "MaxAttempts": self.settings.wait_max_attempts,
                    },
                )
            except WaiterError as exc:
                reason = (exc.last_response or {}).get("FailureReason")
                raise ReviewpipeError(
                    f"endpoint {endpoint_name} did not reach InService: {reason or exc}"
                ) from exc
        described = self.describe_endpoint(endpoint_name)
        assert described is not None
        return described

    # ------------------------------------------------------------ deploy

    def _ensure_model(self, name: str, container: dict[str, Any]) -> None:
        with _aws(f"creating model {name}"):
            if self._exists(self.sagemaker.describe_model, ModelName=name):
                return
            self.sagemaker.create_model(
                ModelName=name,
                PrimaryContainer=container,
                ExecutionRoleArn=self.settings.role_arn,
                Tags=self._tags(),
            )
        print(f"deploy: created model {name}")

    def _ensure_endpoint_config(
        self,
        name: str,
        production_variants: list[dict[str, Any]],
        data_capture: dict[str, Any] | None = None,
    ) -> None:
        with _aws(f"creating endpoint config {name}"):
            if self._exists(self.sagemaker.describe_endpoint_config, EndpointConfigName=name):
                return
            extra = {"DataCaptureConfig": data_capture} if data_capture else {}
            self.sagemaker.create_endpoint_config(
                EndpointConfigName=name, ProductionVariants=production_variants, Tags=self._tags(), **extra
            )
        print(f"deploy: created endpoint config {name}")

    def deploy(
        self,
        endpoint_name: str,
        variants: list[VariantConfig],
        environment: dict[str, str] | None = None,
        data_capture: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Bring `endpoint_name` to exactly `variants` (and `data_capture`, a DataCaptureConfig from
        data_capture_config(), or None for no capture); returns the deployment state."""
        for what, name in (
            ("deploy.endpoint_name", endpoint_name),
            *(("deploy.variants name", v.name) for v in variants),
        ):
            if not _VALID_NAME.fullmatch(name):
                raise ReviewpipeError(
                    f"{what} {name!r} is not a valid SageMaker name: letters, digits and "
                    f"single hyphens, at most {NAME_LIMIT} characters, e.g. reviewpipe-sentiment"
                )
        records, production_variants = [], []
        for variant in variants:
            info = package_info(variant.package)
            container = {
                "Image": self.image_uri,
                "ModelDataUrl": self.upload(variant.package, info),
                "Environment": dict(sorted((environment or {}).items())),
            }
            model_name = resource_name(
                endpoint_name,
                variant.name,
                digest=_digest({"container": container, "role": self.settings.role_arn}),
            )
            self._ensure_model(model_name, container)
            production_variant = {
                "VariantName": variant.name,
                "ModelName": model_name,
                "InstanceType": variant.instance_type or self.settings.instance_type,
                "InitialInstanceCount": int(variant.instance_count or self.settings.instance_count),
                "InitialVariantWeight": float(variant.weight),
            }
            production_variants.append(production_variant)
            records.append(
                {
                    "name": variant.name,
                    "package": variant.package,
                    **info,
                    "weight": variant.weight,
                    "model_name": model_name,
                    "model_data_url": container["ModelDataUrl"],
                    "instance_type": production_variant["InstanceType"],
                    "instance_count": production_variant["InitialInstanceCount"],
                }
            )
        config_name = resource_name(
            endpoint_name,
            digest=_digest(
                production_variants
                if not data_capture
                else {"variants": production_variants, "capture": data_capture}
            ),
        )
        existing = self.describe_endpoint(endpoint_name)
        if existing and existing.get("EndpointStatus") in _BUSY:
            print(f"deploy: endpoint {endpoint_name} is {existing['EndpointStatus']}; waiting for it first")
            existing = self.wait_in_service(endpoint_name)
        if existing and existing.get("EndpointStatus") == "Failed":
            raise ReviewpipeError(
                f"endpoint {endpoint_name} is Failed ({existing.get('FailureReason')}); "
                "remove it with `reviewpipe deploy delete`, then deploy again"
            )
        if existing is None:
            self._ensure_endpoint_config(config_name, production_variants, data_capture)
            with _aws(f"creating endpoint {endpoint_name}"):
                self.sagemaker.create_endpoint(
                    EndpointName=endpoint_name, EndpointConfigName=config_name, Tags=self._tags()
                )
            print(f"deploy: creating endpoint {endpoint_name} ({config_name}); waiting for InService")
        else:
            replaced = None
            if existing["EndpointConfigName"] != config_name:
                current_config = self._describe_config(existing["EndpointConfigName"])
                if _without_weights(current_config["ProductionVariants"]) == _without_weights(
                    production_variants
                ) and _capture_of(current_config) == (data_capture or None):
                    config_name = existing[
                        "EndpointConfigName"
                    ]  # same models: only the traffic split may move
                else:
                    replaced = current_config
            if replaced is None:
                current = {
                    v["VariantName"]: v.get("CurrentWeight") for v in existing.get("ProductionVariants", [])
                }
                wanted = {v.name: float(v.weight) for v in variants}
                if current != wanted:  # also undoes a runtime `reviewpipe deploy shift`
                    self._update_weights(endpoint_name, wanted)
            else:
                self._ensure_endpoint_config(config_name, production_variants, data_capture)
                with _aws(f"updating endpoint {endpoint_name}"):
                    self.sagemaker.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name)
                print(f"deploy: updating endpoint {endpoint_name} to {config_name}; waiting for InService")
                self.wait_in_service(endpoint_name)
                if self.settings.delete_replaced:
                    self._delete_config_and_models(
                        replaced, keep={pv["ModelName"] for pv in production_variants}
                    )
        described = self.wait_in_service(endpoint_name)
        print(
            f"deploy: endpoint {endpoint_name} InService: "
            + ", ".join(f"{r['name']}={r['weight']:g}" for r in records)
        )
        return {
            "target": "sagemaker",
            "endpoint_name": endpoint_name,
            "endpoint_arn": described["EndpointArn"],
            "endpoint_config_name": described.get("EndpointConfigName", config_name),
            "status": described["EndpointStatus"],
            "region": self.region,
            "invocations_url": f"https://runtime.sagemaker.{self.region}.amazonaws.com/endpoints/"
            f"{endpoint_name}/invocations",
            "image_uri": self.image_uri,
            "role_arn": self.settings.role_arn,
            "s3_uri": self.settings.s3_uri,
            "variants": records,
            "data_capture": data_capture,
            "deployed_at": now(),
        }

    def _describe_config(self, name: str) -> dict[str, Any]:
        with _aws(f"describing endpoint config {name}"):
            return self.sagemaker.describe_endpoint_config(EndpointConfigName=name)

    # ------------------------------------------------------------ runtime changes

    def _update_weights(self, endpoint_name: str, weights: dict[str, float]) -> None:
        with _aws(f"updating weights of {endpoint_name}"):
            self.sagemaker.update_endpoint_weights_and_capacities(
                EndpointName=endpoint_name,
                DesiredWeightsAndCapacities=[
                    {"VariantName": name, "DesiredWeight": float(weight)} for name, weight in weights.items()
                ],
            )
        print(
            f"deploy: shifting {endpoint_name} traffic to "
            + ", ".join(f"{k}={v:g}" for k, v in weights.items())
        )

    def shift(self, endpoint_name: str, weights: dict[str, float]) -> dict[str, float]:
        """update_endpoint_weights_and_capacities, then wait; returns every variant's weight."""
        existing = self.describe_endpoint(endpoint_name)
        if existing is None:
            raise ReviewpipeError(
                f"no SageMaker endpoint {endpoint_name!r} in {self.region}; deploy it first"
            )
        current = {
            v["VariantName"]: float(v.get("CurrentWeight") or 0.0) for v in existing["ProductionVariants"]
        }
        unknown = sorted(set(weights) - set(current))
        if unknown:
            raise ReviewpipeError(f"unknown variant(s) {unknown}; {endpoint_name} has {sorted(current)}")
        if any(w < 0 for w in weights.values()) or sum({**current, **weights}.values()) <= 0:
            raise ReviewpipeError("weights must be >= 0 with at least one variant above 0")
        self._update_weights(endpoint_name, weights)
        described = self.wait_in_service(endpoint_name)
        return {
            v["VariantName"]: float(v.get("CurrentWeight") or 0.0) for v in described["ProductionVariants"]
        }

    def status(self, endpoint_name: str) -> dict[str, Any]:
        existing = self.describe_endpoint(endpoint_name)
        if existing is None:
            return {"endpoint_name": endpoint_name, "status": "NotFound", "region": self.region}
        return {
            "endpoint_name": endpoint_name,
            "status": existing["EndpointStatus"],
            "region": self.region,
            "endpoint_arn": existing["EndpointArn"],
            "endpoint_config_name": existing["EndpointConfigName"],
            "failure_reason": existing.get("FailureReason"),
            "variants": [
                {
                    "name": v["VariantName"],
                    "current_weight": v.get("CurrentWeight"),
                    "desired_weight": v.get("DesiredWeight"),
                    "current_instance_count": v.get("CurrentInstanceCount"),
                }
                for v in existing.get("ProductionVariants", [])
            ],
        }

    # ------------------------------------------------------------ teardown

    def _delete_config_and_models(
        self, config: dict[str, Any], keep: frozenset[str] | set[str] = frozenset()
    ) -> list[str]:
        deleted = []
        with _aws(f"deleting endpoint config {config['EndpointConfigName']}"):
            self.sagemaker.delete_endpoint_config(EndpointConfigName=config["EndpointConfigName"])
        deleted.append(f"endpoint-config/{config['EndpointConfigName']}")
        for model in sorted({v["ModelName"] for v in config["ProductionVariants"]} - keep):
            with _aws(f"deleting model {model}"):
                try:
                    self.sagemaker.delete_model(ModelName=model)
                    deleted.append(f"model/{model}")
                except Exception as exc:
                    if not _not_found(exc) and "Could not find model" not in str(exc):
                        raise
        return deleted

    def delete(self, endpoint_name: str) -> list[str]:
        """Delete the endpoint, its endpoint config and its models (the S3 tarballs stay)."""
        existing = self.describe_endpoint(endpoint_name)
        if existing is None:
            raise ReviewpipeError(
                f"no SageMaker endpoint {endpoint_name!r} in {self.region}; nothing to delete"
            )
        config = self._describe_config(existing["EndpointConfigName"])
        with _aws(f"deleting endpoint {endpoint_name}"):
            self.sagemaker.delete_endpoint(EndpointName=endpoint_name)
        deleted = [f"endpoint/{endpoint_name}", *self._delete_config_and_models(config)]
        print("deploy: deleted " + ", ".join(deleted))
        return deleted


def data_capture_config(capture: CaptureSettings) -> dict[str, Any] | None:
    """serve.capture as SageMaker's DataCaptureConfig (None when capture is off). SageMaker writes
    the same layout as `reviewpipe serve` ({destination}/{endpoint}/{variant}/yyyy/mm/dd/hh/*.jsonl),
    so `reviewpipe monitor check --capture` reads either; the destination must be on S3."""
    if not capture.enabled:
        return None
    if not capture.destination.startswith("s3://") or len(capture.destination) <= len("s3://"):
        raise ReviewpipeError(
            f"serve.capture.destination={capture.destination!r}: a SageMaker endpoint captures to S3 only; "
            "set it to s3://bucket/prefix (or serve.capture.enabled=false)"
        )
    if not 0 <= float(capture.sampling_percentage) <= 100:
        raise ReviewpipeError("serve.capture.sampling_percentage must be between 0 and 100")
    header = {}
    if capture.json_content_types:
        header["JsonContentTypes"] = list(capture.json_content_types)
    if capture.csv_content_types:
        header["CsvContentTypes"] = list(capture.csv_content_types)
    config: dict[str, Any] = {
        "EnableCapture": True,
        "InitialSamplingPercentage": int(round(float(capture.sampling_percentage))),
        "DestinationS3Uri": capture.destination.rstrip("/"),
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    }
    if header:
        config["CaptureContentTypeHeader"] = header
    return config


def _capture_of(endpoint_config: dict[str, Any]) -> dict[str, Any] | None:
    """An endpoint config's DataCaptureConfig as we would send it (None when capture is off)."""
    capture = endpoint_config.get("DataCaptureConfig")
    if not capture or not capture.get("EnableCapture"):
        return None
    keys = (
        "EnableCapture",
        "InitialSamplingPercentage",
        "DestinationS3Uri",
        "CaptureOptions",
        "CaptureContentTypeHeader",
    )
    return {k: capture[k] for k in keys if k in capture}


def _without_weights(production_variants: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(
        (v["VariantName"], v["ModelName"], v.get("InstanceType"), v.get("InitialInstanceCount"))
        for v in production_variants
    )
