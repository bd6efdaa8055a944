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
import pytest
from omegaconf import OmegaConf

from reviewpipe import cli, registry
from reviewpipe.stages import register as register_stage
from tests.test_aws_training import ROLE
from tests.test_deploy_sagemaker import baseline_packages
from tests.test_registry import FAIRNESS, METRICS, _stage_params


def read_s3(uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def mirrored_params(tmp_path: Path, bucket: str, group: str) -> Any:
    model = baseline_packages(tmp_path / "pkg", ())  # writes pkg/model.joblib only
    assert model == {}
    params = _stage_params(
        tmp_path,
        candidates=["baseline"],
        model_paths={"baseline": str(tmp_path / "pkg" / "model.joblib")},
        sagemaker=True,
        sagemaker_registry={
            "group": group,
            "s3_prefix": f"s3://{bucket}/registry",
            "image_uri": "763104351884.dkr.ecr.{region}.amazonaws.com/huggingface-pytorch-inference:cpu",
            "instance_types": ["ml.m5.xlarge", "ml.c5.xlarge"],
        },
    )
    params.aws = {"region": "us-east-1", "profile": None, "endpoint_url": None, "role_arn": ROLE}
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/metrics.json").write_text(json.dumps(METRICS))
    (tmp_path / "reports/fairness.json").write_text(json.dumps(FAIRNESS))
    (tmp_path / "prepared").mkdir()
    return params


def test_versions_are_mirrored_and_approval_updates_both_sides(
    tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = f"reviews-{s3_bucket[-8:]}"
    params = mirrored_params(tmp_path, s3_bucket, group)
    register_stage.main(params)
    local = registry.Registry(params.register.registry_uri).get(1)
    assert local.status == registry.PENDING

    sm = boto3.client("sagemaker", region_name="us-east-1")
    assert sm.describe_model_package_group(ModelPackageGroupName=group)["ModelPackageGroupName"] == group
    arn = json.loads((Path(params.register.registry_uri) / "sagemaker.json").read_text())["1"]
    package = sm.describe_model_package(ModelPackageName=arn)
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert package["ModelPackageGroupName"] == group
    assert package["CustomerMetadataProperties"]["reviewpipe_version"] == "1"
    assert package["CustomerMetadataProperties"]["model_name"] == "baseline"
    container = package["InferenceSpecification"]["Containers"][0]
    assert (
        container["Image"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:cpu"
    )
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
    assert json.loads(read_s3(statistics["S3Uri"]))["metrics"] == local.metrics

    # `reviewpipe registry approve 1` moves both sides; reject likewise.
    params_file = tmp_path / "params.yaml"
    OmegaConf.save(params, params_file)
    assert cli.main(["registry", "--params", str(params_file), "approve", "1", "--reason", "reviewed"]) == 0
    assert registry.Registry(params.register.registry_uri).get(1).status == registry.APPROVED
    approved = sm.describe_model_package(ModelPackageName=arn)
    assert approved["ModelApprovalStatus"] == "Approved" and approved["ApprovalDescription"] == "reviewed"
    assert cli.main(["registry", "--params", str(params_file), "reject", "1", "--reason", "drift"]) == 0
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Rejected"

    # A second run registers version 2 as a second model package of the group; version 1 is not re-created.
    register_stage.main(params)
    listed = sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert len(listed) == 2
    assert set(json.loads((Path(params.register.registry_uri) / "sagemaker.json").read_text())) == {"1", "2"}


def test_mirror_off_makes_no_aws_call(tmp_path: Path) -> None:
    params = _stage_params(tmp_path)
    assert params.register.sagemaker is False
    from reviewpipe.aws.model_registry import mirror_for

    assert mirror_for(params) is None  # no `aws` section needed, nothing contacted
