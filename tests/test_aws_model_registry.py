"""register.sagemaker=true against moto's server: each registry version mirrored as a model package
(CreateModelPackageGroup, CreateModelPackage) and `reviewpipe registry approve|reject` updating both
sides (UpdateModelPackage), read back with DescribeModelPackage and from the uploaded S3 objects.

moto stores and returns model packages and their approval status as SageMaker does; what it cannot
show is the AWS side of approval (EventBridge events, Studio's registry view, IAM on the group).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import boto3
from omegaconf import OmegaConf

from reviewpipe import cli, registry
from reviewpipe.aws.model_registry import mirror_for
from reviewpipe.config import load_params
from tests.conftest import REPO_ROOT
from tests.test_aws_training import ROLE
from tests.test_deploy_sagemaker import baseline_packages

METRICS = {"validation": {"macro_f1": 0.71, "accuracy": 0.73}, "test": {"macro_f1": 0.70, "accuracy": 0.72}}
GATE = {"metric": "macro_f1", "metric_value": 0.71, "passed": True}


def read_s3(uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def mirrored_params(tmp_path: Path, bucket: str, group: str) -> Any:
    overrides = [
        f"register.registry_uri={tmp_path / 'registry'}",
        "register.sagemaker=true",
        f"register.sagemaker_registry.group={group}",
        f"register.sagemaker_registry.s3_prefix=s3://{bucket}/registry",
        "register.sagemaker_registry.image_uri=763104351884.dkr.ecr.{region}.amazonaws.com/hf-inference:cpu",
        "register.sagemaker_registry.instance_types=[ml.m5.xlarge,ml.c5.xlarge]",
        "aws.region=us-east-1",
        f"aws.role_arn={ROLE}",
    ]
    params = load_params(REPO_ROOT / "params.yaml", overrides)
    OmegaConf.save(params, tmp_path / "params.yaml")
    return params


def register_version(params: Any, model: Path, status: str) -> Any:
    """What the register stage does after its gate: a new version, then the mirror's turn."""
    entry = registry.Registry(params.register.registry_uri).register(
        "baseline", str(model), status=status, metrics=METRICS, gate=GATE, reason="passed the gate"
    )
    mirror = mirror_for(params)
    assert mirror is not None
    mirror.mirror(entry)
    return entry


def test_versions_are_mirrored_and_approval_updates_both_sides(tmp_path: Path, s3_bucket: str) -> None:
    group = f"reviews-{s3_bucket[-8:]}"
    params = mirrored_params(tmp_path, s3_bucket, group)
    baseline_packages(tmp_path / "pkg", ())  # writes pkg/model.joblib, a real tiny baseline
    local = register_version(params, tmp_path / "pkg" / "model.joblib", registry.PENDING)

    sm = boto3.client("sagemaker", region_name="us-east-1")
    assert sm.describe_model_package_group(ModelPackageGroupName=group)["ModelPackageGroupName"] == group
    arn = json.loads((tmp_path / "registry" / "sagemaker.json").read_text())["1"]
    package = sm.describe_model_package(ModelPackageName=arn)
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert package["ModelPackageGroupName"] == group
    assert package["CustomerMetadataProperties"]["reviewpipe_version"] == "1"
    assert package["CustomerMetadataProperties"]["model_name"] == "baseline"
    assert package["CustomerMetadataProperties"]["metric"] == "macro_f1=0.71"
    container = package["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/hf-inference:cpu"
    assert package["InferenceSpecification"]["SupportedTransformInstanceTypes"] == [
        "ml.m5.xlarge",
        "ml.c5.xlarge",
    ]
    # The package's S3 URI holds the SageMaker tarball of this version's model.
    (tmp_path / "mirrored.tar.gz").write_bytes(read_s3(container["ModelDataUrl"]))
    with tarfile.open(tmp_path / "mirrored.tar.gz") as tar:
        assert {"model.joblib", "code/inference.py"} <= set(tar.getnames())
    statistics = package["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["ContentType"] == "application/json"
    assert json.loads(read_s3(statistics["S3Uri"]))["metrics"] == local.metrics == METRICS

    # `reviewpipe registry approve 1` moves both sides; reject likewise.
    params_file = str(tmp_path / "params.yaml")
    assert cli.main(["registry", "--params", params_file, "approve", "1", "--reason", "reviewed"]) == 0
    assert registry.Registry(params.register.registry_uri).get(1).status == registry.APPROVED
    approved = sm.describe_model_package(ModelPackageName=arn)
    assert approved["ModelApprovalStatus"] == "Approved" and approved["ApprovalDescription"] == "reviewed"
    assert cli.main(["registry", "--params", params_file, "reject", "1", "--reason", "drift"]) == 0
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Rejected"

    # Version 2 becomes a second model package of the group; mirroring version 1 again creates nothing.
    register_version(params, tmp_path / "pkg" / "model.joblib", registry.REJECTED)
    mirror_for(params).mirror(registry.Registry(params.register.registry_uri).get(1))  # type: ignore[union-attr]
    listed = sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert sorted(p["ModelApprovalStatus"] for p in listed) == ["Rejected", "Rejected"]
    assert set(json.loads((tmp_path / "registry" / "sagemaker.json").read_text())) == {"1", "2"}


def test_mirror_off_makes_no_aws_call() -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.register.sagemaker is False
    assert mirror_for(params) is None  # nothing contacted
