"""register.sagemaker=true: every registry version mirrored into a SageMaker Model Package Group.

The local registry (reviewpipe.registry) stays the source of truth that `package` and `deploy` read;
the mirror makes each version visible where AWS teams look (Studio's Model Registry, EventBridge
rules on approval changes):

  * CreateModelPackageGroup once (register.sagemaker_registry.group);
  * per version: the version's model packaged as SageMaker's model.tar.gz (reviewpipe.serving.package)
    and uploaded content-addressed, its metrics + gate decision uploaded as JSON, then
    CreateModelPackage with the approval status, InferenceSpecification (the inference image, the
    package's S3 URI, content types, instance types), ModelMetrics (the metrics JSON) and the
    reviewpipe version in CustomerMetadataProperties;
  * `reviewpipe registry approve|reject N`: UpdateModelPackage(ModelApprovalStatus) on the mirrored one.
The version -> ModelPackageArn map is kept beside the versions (<registry_uri>/sagemaker.json).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from reviewpipe import storage
from reviewpipe.aws.clients import Aws, AwsSettings, aws_call, error_code, upload
from reviewpipe.config import section, to_dict
from reviewpipe.errors import ReviewpipeError
from reviewpipe.schema import SageMakerRegistryParams
from reviewpipe.storage import StorageOptions

MAP_FILE = "sagemaker.json"
CONTENT_TYPES = ["application/json", "application/jsonlines"]


def check_settings(settings: SageMakerRegistryParams) -> SageMakerRegistryParams:
    """register.sagemaker_registry, checked where the schema cannot (the S3 prefix)."""
    if not settings.s3_prefix.startswith("s3://") or "CHANGE-ME" in settings.s3_prefix:
        raise ReviewpipeError(
            f"register.sagemaker_registry.s3_prefix must be your s3://bucket/prefix, not {settings.s3_prefix!r}"
        )
    return settings


class ModelRegistryMirror:
    def __init__(
        self, aws: Aws, settings: SageMakerRegistryParams, registry_uri: str, options: StorageOptions | None
    ) -> None:
        self.aws = aws
        self.settings = settings
        self.sagemaker = aws.client("sagemaker")
        self.s3 = aws.client("s3")
        self.map_uri = storage.join(registry_uri, MAP_FILE)
        self.options = options

    def arns(self) -> dict[str, str]:
        """{registry version: ModelPackageArn} of the versions mirrored so far."""
        return (
            storage.read_json(self.map_uri, self.options)
            if storage.exists(self.map_uri, self.options)
            else {}
        )

    def ensure_group(self) -> None:
        with aws_call(f"reading model package group {self.settings.group}"):
            try:
                self.sagemaker.describe_model_package_group(ModelPackageGroupName=self.settings.group)
                return
            except Exception as exc:
                if error_code(exc) != "ValidationException":
                    raise
            self.sagemaker.create_model_package_group(
                ModelPackageGroupName=self.settings.group,
                ModelPackageGroupDescription="reviewpipe review-sentiment models (mirrored from models/registry)",
                Tags=[{"Key": "reviewpipe:managed", "Value": "true"}],
            )
        print(f"register: created SageMaker model package group {self.settings.group}")

    def _put(self, data: bytes, name: str) -> str:
        uri = "/".join([self.settings.s3_prefix.rstrip("/"), hashlib.sha256(data).hexdigest()[:16], name])
        return upload(self.s3, uri, data)

    def package(self, entry: Any) -> str:
        """The version's model.tar.gz on S3 (the package's S3 URI): the tarball the registry stored
        with the version when it has one (checked against its sha256), else one built from its model."""
        from reviewpipe.serving.package import build_package

        stored = entry.to_dict().get("package") or {}  # versions that predate stored packages have none
        if stored.get("uri") and storage.exists(stored["uri"], self.options):
            fs, path = storage.get_fs(stored["uri"], self.options)
            data = fs.cat_file(path)
            if stored.get("sha256") and hashlib.sha256(data).hexdigest() != stored["sha256"]:
                raise ReviewpipeError(
                    f"registry version {entry.version}: {stored['uri']} does not match its recorded sha256"
                )
            return self._put(data, "model.tar.gz")
        with tempfile.TemporaryDirectory() as tmp:
            tarball = Path(tmp) / "model.tar.gz"
            build_package(
                entry.model_path, tarball, model_name=entry.model_name, model_version=f"v{entry.version}"
            )
            return self._put(tarball.read_bytes(), "model.tar.gz")

    def request(self, entry: Any, package_uri: str, metrics_uri: str) -> dict[str, Any]:
        """CreateModelPackage's arguments for one registry version."""
        gate = entry.gate or {}
        return {
            "ModelPackageGroupName": self.settings.group,
            "ModelPackageDescription": (
                f"reviewpipe v{entry.version} {entry.model_name}: {entry.status_reason}"
            )[:1024],
            "ModelApprovalStatus": entry.status,
            "InferenceSpecification": {
                "Containers": [
                    {
                        "Image": self.settings.image_uri.format(region=self.aws.region),
                        "ModelDataUrl": package_uri,
                    }
                ],
                "SupportedContentTypes": CONTENT_TYPES,
                "SupportedResponseMIMETypes": CONTENT_TYPES,
                "SupportedRealtimeInferenceInstanceTypes": list(self.settings.instance_types),
                "SupportedTransformInstanceTypes": list(self.settings.instance_types),
            },
            "ModelMetrics": {
                "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": metrics_uri}}
            },
            "CustomerMetadataProperties": {
                "reviewpipe_version": str(entry.version),
                "model_name": entry.model_name,
                "metric": f"{gate.get('metric')}={gate.get('metric_value')}",
                "model_hash": str(entry.model_hash),
                "git_commit": str(entry.git_commit),
            },
        }

    def mirror(self, entry: Any) -> str:
        """CreateModelPackage for a version not mirrored yet; returns its ARN."""
        arns = self.arns()
        if str(entry.version) in arns:
            return arns[str(entry.version)]
        self.ensure_group()
        metrics = json.dumps(
            {"metrics": entry.metrics, "gate": entry.gate}, sort_keys=True, default=str
        ).encode()
        request = self.request(entry, self.package(entry), self._put(metrics, "metrics.json"))
        with aws_call(f"creating a model package in {self.settings.group}"):
            arn = str(self.sagemaker.create_model_package(**request)["ModelPackageArn"])
        storage.write_json(self.map_uri, {**arns, str(entry.version): arn}, self.options)
        print(f"register: version {entry.version} mirrored to {arn} ({entry.status})")
        return arn

    def set_status(self, entry: Any, reason: str) -> str:
        """UpdateModelPackage(ModelApprovalStatus) for a version's mirror (mirroring it first if needed)."""
        arns = self.arns()
        if str(entry.version) not in arns:
            return self.mirror(entry)
        with aws_call(f"updating {arns[str(entry.version)]}"):
            self.sagemaker.update_model_package(
                ModelPackageArn=arns[str(entry.version)],
                ModelApprovalStatus=entry.status,
                ApprovalDescription=reason[:1024],
            )
        print(f"registry: {arns[str(entry.version)]} is now {entry.status} on SageMaker")
        return arns[str(entry.version)]


def mirror_for(params: Any) -> ModelRegistryMirror | None:
    """The mirror when register.sagemaker is true, else None."""
    cfg = section(params, "register")
    if not cfg.sagemaker:
        return None
    aws = Aws(AwsSettings.from_params(section(params, "aws")))
    options = StorageOptions.from_params(params.get("storage"))
    return ModelRegistryMirror(
        aws,
        check_settings(SageMakerRegistryParams.model_validate(to_dict(cfg.sagemaker_registry))),
        cfg.registry_uri,
        options,
    )
