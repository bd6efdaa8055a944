"""deploy.target=sagemaker against moto's S3 + SageMaker server: every call's arguments (captured with
botocore's parameter hook and read back with describe_*), the uploaded object, idempotent re-deploys,
weight shifts, model replacement, teardown, the stage + `reviewpipe deploy` CLI, and no credential leaks."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from omegaconf import OmegaConf

from reviewpipe import cli, registry
from reviewpipe.deploy import VariantConfig, package_info
from reviewpipe.deploy.sagemaker import SageMakerDeployer, SageMakerSettings, resource_name
from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving import package
from reviewpipe.serving.server import ServeSettings
from tests.helpers.params import conf_section
from tests.test_registry import register_package

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/ReviewpipeSageMaker"
IMAGE = (
    "763104351884.dkr.ecr.{region}.amazonaws.com/huggingface-pytorch-inference:"
    "2.6.0-transformers4.51.3-cpu-py312-ubuntu22.04"
)
ENVIRONMENT = {"REVIEWPIPE_QUANTIZE": "int8", "REVIEWPIPE_BACKEND": "torch", "REVIEWPIPE_BATCH_SIZE": "32"}


def baseline_packages(root: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """Real (tiny) baseline packages with different bytes, built by the package module; about a second."""
    import joblib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    root.mkdir(parents=True, exist_ok=True)
    model = root / "model.joblib"
    joblib.dump(
        make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(
            ["love it", "hate it", "it is ok"] * 4, [1, -1, 0] * 4
        ),
        model,
    )
    out = {}
    for name in names:
        out[name] = root / f"{name}.tar.gz"
        package.build_package(model, out[name], model_name=name, model_version=f"{name}-v1")
    return out


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return baseline_packages(tmp_path_factory.mktemp("packages"), ("champion", "challenger", "challenger2"))


class Calls:
    """Every S3/SageMaker API call a session's clients make, with its parameters (botocore hook)."""

    def __init__(self, session: boto3.Session) -> None:
        self.log: list[tuple[str, str, dict[str, Any]]] = []
        session.events.register("before-parameter-build.sagemaker", self._record)
        session.events.register("before-parameter-build.s3", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        kept = {k: v for k, v in params.items() if k != "Body"}  # upload bodies are file objects
        self.log.append((model.service_model.service_name, model.name, copy.deepcopy(kept)))

    def named(self, operation: str) -> list[dict[str, Any]]:
        return [params for _, op, params in self.log if op == operation]

    def operations(self) -> list[str]:
        return [op for _, op, _ in self.log]

    def clear(self) -> None:
        self.log.clear()


def settings(bucket: str, **extra: Any) -> SageMakerSettings:
    return SageMakerSettings.from_mapping(
        {
            "s3_uri": f"s3://{bucket}/reviewpipe/models",
            "role_arn": ROLE,
            "image_uri": IMAGE,
            "region": REGION,
            "wait_delay_s": 0.01,
            "wait_max_attempts": 5,
            "tags": {"project": "reviewpipe"},
            **extra,
        }
    )


@pytest.fixture
def session(moto_server: str) -> boto3.Session:
    return boto3.Session(region_name=REGION)  # credentials and endpoint: moto's environment (the AWS chain)


@pytest.fixture
def endpoint_name() -> str:
    return f"reviews-{uuid.uuid4().hex[:8]}"


def emulate_update_endpoint(session: boto3.Session) -> list[dict[str, Any]]:
    """moto 5.2 does not implement UpdateEndpoint (it answers 500); this hook does what SageMaker does
    (points the endpoint at the new config) on moto's own backend and records the call."""
    from moto.sagemaker.models import sagemaker_backends

    calls: list[dict[str, Any]] = []

    def update(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        body = json.loads(params["body"])
        calls.append(body)
        backend = sagemaker_backends["123456789012"][REGION]
        endpoint = backend.endpoints[body["EndpointName"]]
        config = backend.endpoint_configs[body["EndpointConfigName"]]
        endpoint.endpoint_config_name = body["EndpointConfigName"]
        endpoint.production_variants = endpoint._process_production_variants(config.production_variants)
        return AWSResponse("", 200, {}, None), {"EndpointArn": endpoint.arn}

    session.events.register("before-call.sagemaker.UpdateEndpoint", update)
    return calls


# ---------------------------------------------------------------- library


def test_deploy_makes_exactly_the_expected_calls(
    session: boto3.Session, s3_bucket: str, endpoint_name: str, tarballs: dict[str, Path]
) -> None:
    calls = Calls(session)
    deployer = SageMakerDeployer(settings(s3_bucket), session=session)
    variants = [
        VariantConfig("champion", str(tarballs["champion"]), 0.8),
        VariantConfig(
            "challenger", str(tarballs["challenger"]), 0.2, instance_type="ml.c5.large", instance_count=2
        ),
    ]
    state = deployer.deploy(endpoint_name, variants, ENVIRONMENT)

    image = IMAGE.format(region=REGION)
    info = {name: package_info(tarballs[name]) for name in ("champion", "challenger")}
    data_urls = {
        name: f"s3://{s3_bucket}/reviewpipe/models/{info[name]['sha256'][:16]}/model.tar.gz" for name in info
    }
    tags = [{"Key": "reviewpipe:managed", "Value": "true"}, {"Key": "project", "Value": "reviewpipe"}]

    # S3: each tarball uploaded once, content-addressed, with its sha256; the bytes are the tarball's
    s3 = boto3.client("s3", region_name=REGION)
    puts = calls.named("PutObject")
    assert [(p["Bucket"], p["Key"]) for p in puts] == [
        (s3_bucket, url.removeprefix(f"s3://{s3_bucket}/")) for url in data_urls.values()
    ]
    for name, put in zip(info, puts, strict=True):
        assert put["Metadata"] == {"sha256": info[name]["sha256"], "model-version": f"{name}-v1"}
        assert s3.get_object(Bucket=s3_bucket, Key=put["Key"])["Body"].read() == tarballs[name].read_bytes()

    # create_model: one per variant, the DLC image for the region, the tarball, the server's settings
    models = calls.named("CreateModel")
    assert [m["ModelName"] for m in models] == [v["model_name"] for v in state["variants"]]
    for name, model in zip(info, models, strict=True):
        assert model == {
            "ModelName": model["ModelName"],
            "ExecutionRoleArn": ROLE,
            "Tags": tags,
            "PrimaryContainer": {"Image": image, "ModelDataUrl": data_urls[name], "Environment": ENVIRONMENT},
        }
        assert model["ModelName"].startswith(f"{endpoint_name}-{name}-")
        described = deployer.sagemaker.describe_model(ModelName=model["ModelName"])
        assert described["PrimaryContainer"]["ModelDataUrl"] == data_urls[name]
        assert described["PrimaryContainer"]["Image"] == image and described["ExecutionRoleArn"] == ROLE

    # create_endpoint_config: the ProductionVariants with weights; create_endpoint on it
    [config] = calls.named("CreateEndpointConfig")
    assert config["ProductionVariants"] == [
        {
            "VariantName": "champion",
            "ModelName": models[0]["ModelName"],
            "InstanceType": "ml.m5.xlarge",
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 0.8,
        },
        {
            "VariantName": "challenger",
            "ModelName": models[1]["ModelName"],
            "InstanceType": "ml.c5.large",
            "InitialInstanceCount": 2,
            "InitialVariantWeight": 0.2,
        },
    ]
    assert config["Tags"] == tags
    assert calls.named("CreateEndpoint") == [
        {"EndpointName": endpoint_name, "EndpointConfigName": config["EndpointConfigName"], "Tags": tags}
    ]
    read_back = deployer.sagemaker.describe_endpoint_config(EndpointConfigName=config["EndpointConfigName"])
    assert [(v["VariantName"], v["InitialVariantWeight"]) for v in read_back["ProductionVariants"]] == [
        ("champion", 0.8),
        ("challenger", 0.2),
    ]

    # waited for InService with the configured waiter, and the state says what is deployed
    endpoint = deployer.sagemaker.describe_endpoint(EndpointName=endpoint_name)
    assert endpoint["EndpointStatus"] == "InService"
    assert {v["VariantName"]: v["CurrentWeight"] for v in endpoint["ProductionVariants"]} == {
        "champion": 0.8,
        "challenger": 0.2,
    }
    assert state["endpoint_arn"] == endpoint["EndpointArn"] and state["status"] == "InService"
    assert state["endpoint_config_name"] == config["EndpointConfigName"]
    assert (
        state["invocations_url"]
        == f"https://runtime.sagemaker.{REGION}.amazonaws.com/endpoints/{endpoint_name}/invocations"
    )
    assert [(v["name"], v["weight"], v["model_data_url"], v["model_version"]) for v in state["variants"]] == [
        ("champion", 0.8, data_urls["champion"], "champion-v1"),
        ("challenger", 0.2, data_urls["challenger"], "challenger-v1"),
    ]
    assert calls.operations().count("DescribeEndpoint") >= 2  # before creating, then the waiter

    # the same deploy again changes nothing: no upload, no create, no update
    calls.clear()
    deployer.deploy(endpoint_name, variants, ENVIRONMENT)
    assert not {op for op in calls.operations() if op.startswith(("Create", "Update", "Put", "Delete"))}


def test_upload_skips_only_when_the_object_holds_the_same_bytes(
    session: boto3.Session, s3_bucket: str, tarballs: dict[str, Path]
) -> None:
    """An object whose metadata claims the tarball's sha256 but holds other bytes is replaced; an
    object with the same bytes is kept (no second PutObject)."""
    calls = Calls(session)
    deployer = SageMakerDeployer(settings(s3_bucket), session=session)
    info = package_info(tarballs["champion"])
    key = f"reviewpipe/models/{info['sha256'][:16]}/model.tar.gz"
    s3 = boto3.client("s3", region_name=REGION)
    forged = tarballs["challenger"].read_bytes()  # other bytes...
    forged = forged[: info["bytes"]].ljust(info["bytes"], b"\0")  # ...of the very same length
    s3.put_object(Bucket=s3_bucket, Key=key, Body=forged, Metadata={"sha256": info["sha256"]})

    uri = deployer.upload(tarballs["champion"], info)
    assert uri == f"s3://{s3_bucket}/{key}" and len(calls.named("PutObject")) == 1
    assert s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == tarballs["champion"].read_bytes()

    calls.clear()
    assert deployer.upload(tarballs["champion"], info) == uri
    assert calls.named("PutObject") == [] and len(calls.named("GetObject")) == 1  # hashed, kept


def test_weight_change_shift_and_model_replacement(
    session: boto3.Session, s3_bucket: str, endpoint_name: str, tarballs: dict[str, Path]
) -> None:
    calls = Calls(session)
    updates = emulate_update_endpoint(session)
    deployer = SageMakerDeployer(settings(s3_bucket), session=session)
    first = deployer.deploy(
        endpoint_name,
        [
            VariantConfig("champion", str(tarballs["champion"]), 0.9),
            VariantConfig("challenger", str(tarballs["challenger"]), 0.1),
        ],
    )

    def weights() -> dict[str, float]:
        described = deployer.sagemaker.describe_endpoint(EndpointName=endpoint_name)
        return {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]}

    # runtime shift: update_endpoint_weights_and_capacities with just the named variant
    calls.clear()
    assert deployer.shift(endpoint_name, {"challenger": 0.5}) == {"champion": 0.9, "challenger": 0.5}
    assert calls.named("UpdateEndpointWeightsAndCapacities") == [
        {
            "EndpointName": endpoint_name,
            "DesiredWeightsAndCapacities": [{"VariantName": "challenger", "DesiredWeight": 0.5}],
        }
    ]
    assert weights() == {"champion": 0.9, "challenger": 0.5}
    with pytest.raises(ReviewpipeError, match="unknown variant"):
        deployer.shift(endpoint_name, {"nope": 1.0})
    with pytest.raises(ReviewpipeError, match="at least one variant above 0"):
        deployer.shift(endpoint_name, {"champion": 0.0, "challenger": 0.0})

    # re-deploying the configured weights only moves traffic back (no new config, no blue/green)
    calls.clear()
    second = deployer.deploy(
        endpoint_name,
        [
            VariantConfig("champion", str(tarballs["champion"]), 0.7),
            VariantConfig("challenger", str(tarballs["challenger"]), 0.3),
        ],
    )
    assert [op for op in calls.operations() if op.startswith(("Create", "Update"))] == [
        "UpdateEndpointWeightsAndCapacities"
    ]
    assert calls.named("UpdateEndpointWeightsAndCapacities")[0]["DesiredWeightsAndCapacities"] == [
        {"VariantName": "champion", "DesiredWeight": 0.7},
        {"VariantName": "challenger", "DesiredWeight": 0.3},
    ]
    assert weights() == {"champion": 0.7, "challenger": 0.3}
    assert second["endpoint_config_name"] == first["endpoint_config_name"]

    # a new challenger model: new model + config, update_endpoint, then the replaced config/model go
    calls.clear()
    third = deployer.deploy(
        endpoint_name,
        [
            VariantConfig("champion", str(tarballs["champion"]), 0.7),
            VariantConfig("challenger", str(tarballs["challenger2"]), 0.3),
        ],
    )
    assert [m["ModelName"] for m in calls.named("CreateModel")] == [third["variants"][1]["model_name"]]
    assert updates == [{"EndpointName": endpoint_name, "EndpointConfigName": third["endpoint_config_name"]}]
    assert third["endpoint_config_name"] != first["endpoint_config_name"]
    assert calls.named("DeleteEndpointConfig") == [{"EndpointConfigName": first["endpoint_config_name"]}]
    assert calls.named("DeleteModel") == [{"ModelName": first["variants"][1]["model_name"]}]  # champion kept
    assert deployer.sagemaker.describe_model(ModelName=first["variants"][0]["model_name"])
    assert weights() == {"champion": 0.7, "challenger": 0.3}


def test_data_capture_is_sent_as_sagemakers_data_capture_config(
    session: boto3.Session, s3_bucket: str, endpoint_name: str, tarballs: dict[str, Path]
) -> None:
    """serve.capture becomes the endpoint config's DataCaptureConfig (same S3 layout `monitor check
    --capture` reads); turning capture on is a new endpoint config (update_endpoint), not a weight
    shift; the same deploy again changes nothing; a local destination is refused."""
    from reviewpipe.deploy.sagemaker import data_capture_config
    from reviewpipe.serving.capture import CaptureSettings

    calls = Calls(session)
    updates = emulate_update_endpoint(session)
    deployer = SageMakerDeployer(settings(s3_bucket), session=session)
    variants = [VariantConfig("champion", str(tarballs["champion"]), 1.0)]
    first = deployer.deploy(endpoint_name, variants, ENVIRONMENT)
    assert first["data_capture"] is None

    capture = CaptureSettings.from_mapping(
        {"enabled": True, "destination": f"s3://{s3_bucket}/capture/", "sampling_percentage": 25}
    )
    wanted = data_capture_config(capture)
    assert wanted == {
        "EnableCapture": True,
        "InitialSamplingPercentage": 25,
        "DestinationS3Uri": f"s3://{s3_bucket}/capture",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {
            "JsonContentTypes": ["application/json", "application/jsonlines"],
            "CsvContentTypes": ["text/csv"],
        },
    }
    calls.clear()
    second = deployer.deploy(endpoint_name, variants, ENVIRONMENT, data_capture=wanted)
    [config] = calls.named("CreateEndpointConfig")
    assert config["DataCaptureConfig"] == wanted
    assert updates == [{"EndpointName": endpoint_name, "EndpointConfigName": second["endpoint_config_name"]}]
    assert (
        second["endpoint_config_name"] != first["endpoint_config_name"] and second["data_capture"] == wanted
    )
    read_back = deployer.sagemaker.describe_endpoint_config(EndpointConfigName=second["endpoint_config_name"])
    assert read_back["DataCaptureConfig"]["DestinationS3Uri"] == f"s3://{s3_bucket}/capture"
    assert read_back["DataCaptureConfig"]["InitialSamplingPercentage"] == 25

    calls.clear()
    deployer.deploy(endpoint_name, variants, ENVIRONMENT, data_capture=wanted)
    assert not {op for op in calls.operations() if op.startswith(("Create", "Update", "Put", "Delete"))}

    assert data_capture_config(CaptureSettings.from_mapping({"enabled": False})) is None
    with pytest.raises(ReviewpipeError, match="captures to S3 only"):
        data_capture_config(CaptureSettings.from_mapping({"enabled": True, "destination": "data/capture"}))


def test_delete_removes_endpoint_config_and_models(
    session: boto3.Session, s3_bucket: str, endpoint_name: str, tarballs: dict[str, Path]
) -> None:
    from botocore.exceptions import ClientError

    deployer = SageMakerDeployer(settings(s3_bucket), session=session)
    state = deployer.deploy(endpoint_name, [VariantConfig("champion", str(tarballs["champion"]), 1.0)])
    assert deployer.delete(endpoint_name) == [
        f"endpoint/{endpoint_name}",
        f"endpoint-config/{state['endpoint_config_name']}",
        f"model/{state['variants'][0]['model_name']}",
    ]
    sm = deployer.sagemaker
    for describe, kwargs in (
        (sm.describe_endpoint, {"EndpointName": endpoint_name}),
        (sm.describe_endpoint_config, {"EndpointConfigName": state["endpoint_config_name"]}),
        (sm.describe_model, {"ModelName": state["variants"][0]["model_name"]}),
    ):
        with pytest.raises(ClientError, match="Could not find"):
            describe(**kwargs)
    bucket, key = state["variants"][0]["model_data_url"].removeprefix("s3://").split("/", 1)
    assert boto3.client("s3", region_name=REGION).head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
    with pytest.raises(ReviewpipeError, match="nothing to delete"):
        deployer.delete(endpoint_name)
    assert deployer.status(endpoint_name)["status"] == "NotFound"


def test_user_mistakes_are_reported(
    session: boto3.Session, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = {"s3_uri": f"s3://{s3_bucket}/m", "role_arn": ROLE, "image_uri": IMAGE}
    with pytest.raises(ReviewpipeError, match="role_arn"):
        SageMakerSettings.from_mapping({**good, "role_arn": "my-role"})
    with pytest.raises(ReviewpipeError, match="s3_uri"):
        SageMakerSettings.from_mapping({**good, "s3_uri": "/local/dir"})
    with pytest.raises(ReviewpipeError, match="unknown keys"):
        SageMakerSettings.from_mapping({**good, "aws_secret_access_key": "x"})
    # the container has torch and no onnxruntime: static int8 (an ONNX graph) and backend onnx cannot run
    with pytest.raises(ReviewpipeError, match=r"deploy.sagemaker.quantize='int8'.*torch"):
        SageMakerSettings.from_mapping({**good, "quantize": "int8"})
    with pytest.raises(ReviewpipeError, match="deploy.sagemaker.backend='onnx'"):
        SageMakerSettings.from_mapping({**good, "backend": "onnx"})
    with pytest.raises(ReviewpipeError, match="quantize='int8'"):
        ServeSettings.from_mapping({}).container_environment("int8")
    assert SageMakerSettings.from_mapping({**good, "quantize": "int8-dynamic"}).quantize == "int8-dynamic"
    deployer = SageMakerDeployer(settings(s3_bucket), session=session)
    with pytest.raises(ReviewpipeError, match="not a valid SageMaker name"):
        deployer.deploy("reviews_v2", [VariantConfig("a", "x.tar.gz")])
    with pytest.raises(ReviewpipeError, match="variants name 'champion 1'"):
        deployer.deploy("reviews", [VariantConfig("champion 1", "x.tar.gz")])
    with pytest.raises(ReviewpipeError, match="not a model.tar.gz"):
        deployer.deploy("x", [VariantConfig("a", str(tmp_path / "missing.tar.gz"))])
    with pytest.raises(ReviewpipeError, match="NoSuchBucket"):
        SageMakerDeployer(settings("no-such-bucket-here"), session=session).upload(
            package.INFERENCE_SOURCE.parent / "inference.py",
            {"sha256": "0" * 64, "bytes": 1, "model_version": "x"},
        )
    # no credentials anywhere in the chain: a clear message, not a traceback
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for key in ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(key, raising=False)
    bare = SageMakerDeployer(settings(s3_bucket), session=boto3.Session(region_name=REGION))
    with pytest.raises(ReviewpipeError, match="no usable AWS credentials"):
        bare.describe_endpoint("anything")


def test_resource_names_are_valid_for_sagemaker() -> None:
    name = resource_name("reviewpipe_sentiment endpoint" * 4, "champion", digest="0123456789")
    assert len(name) <= 63 and name.endswith("-0123456789")
    assert all(c.isalnum() or c == "-" for c in name) and "--" not in name and name[0].isalnum()


# ---------------------------------------------------------------- stage + CLI


@pytest.fixture
def sagemaker_params(
    moto_server: str,
    s3_bucket: str,
    tarballs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    endpoint_name: str,
) -> Iterator[Path]:
    """A working dir with params.yaml for deploy=sagemaker, and distinctive fake credentials in the chain."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "canary-access-key-must-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "reviewpipe-secret-must-not-leak")
    composed = conf_section("deploy", "sagemaker")
    composed.endpoint_name = endpoint_name
    composed.variants = [
        {"name": "champion", "package": str(tarballs["champion"]), "weight": 0.9},
        {"name": "challenger", "package": str(tarballs["challenger"]), "weight": 0.1},
    ]
    # deploy ships Approved registry versions only; the registry lives outside the scanned working dir
    registry_uri = str(tarballs["champion"].parent / f"registry-{uuid.uuid4().hex[:8]}")
    reg = registry.Registry(registry_uri)
    for name in ("champion", "challenger"):
        register_package(reg, tarballs[name], name, registry.APPROVED)
    composed.sagemaker.s3_uri = f"s3://{s3_bucket}/models"
    composed.sagemaker.role_arn = ROLE
    composed.sagemaker.region = REGION
    composed.sagemaker.wait_delay_s = 0.01
    params = OmegaConf.create(
        {
            "deploy": composed,
            "register": {"registry_uri": registry_uri},
            "storage": {},
            # the local server's ONNX int8 backend: a SageMaker deploy still runs torch (no onnxruntime there)
            "serve": {"quantize": "int8", "backend": "onnx", "max_batch_size": 16, "num_threads": 2},
        }
    )
    OmegaConf.save(params, tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    yield tmp_path / "params.yaml"


def test_stage_and_cli_round_trip_without_leaking_credentials(
    sagemaker_params: Path, endpoint_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from reviewpipe.stages import deploy as deploy_stage

    params = OmegaConf.load(sagemaker_params)
    deploy_stage.main(params)
    stage_printed = capsys.readouterr()
    assert "InService" in stage_printed.out
    state_path = Path(params.deploy.state_path)
    state = json.loads(state_path.read_text())
    sm = boto3.client("sagemaker", region_name=REGION)
    endpoint = sm.describe_endpoint(EndpointName=endpoint_name)
    assert state["target"] == "sagemaker" and state["endpoint_arn"] == endpoint["EndpointArn"]
    assert {v["name"]: v["weight"] for v in state["variants"]} == {"champion": 0.9, "challenger": 0.1}
    assert {n: r["version"] for n, r in state["registry_versions"].items()} == {
        "champion": 1,
        "challenger": 2,
    }
    model = sm.describe_model(ModelName=state["variants"][0]["model_name"])
    # the endpoint gets the local server's batch settings, and the container's backend: torch (the
    # image has no onnxruntime) at deploy.sagemaker.quantize, whatever serve.backend the local server uses
    environment = model["PrimaryContainer"]["Environment"]
    assert environment == ServeSettings.from_mapping(params.serve).container_environment("none")
    assert {
        k: environment[k]
        for k in (
            "REVIEWPIPE_BACKEND",
            "REVIEWPIPE_QUANTIZE",
            "REVIEWPIPE_BATCH_SIZE",
            "REVIEWPIPE_NUM_THREADS",
        )
    } == {
        "REVIEWPIPE_BACKEND": "torch",
        "REVIEWPIPE_QUANTIZE": "none",
        "REVIEWPIPE_BATCH_SIZE": "16",
        "REVIEWPIPE_NUM_THREADS": "2",
    }
    # no capture configured: the endpoint config has none
    config = sm.describe_endpoint_config(EndpointConfigName=state["endpoint_config_name"])
    assert "DataCaptureConfig" not in config or not config["DataCaptureConfig"].get("EnableCapture")

    assert (
        cli.main(
            [
                "deploy",
                "--params",
                str(sagemaker_params),
                "shift",
                "--variant",
                "challenger",
                "--weight",
                "0.5",
                "--variant",
                "champion",
                "--weight",
                "0.5",
            ]
        )
        == 0
    )
    described = sm.describe_endpoint(EndpointName=endpoint_name)
    assert {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]} == {
        "champion": 0.5,
        "challenger": 0.5,
    }
    assert {v["name"]: v["weight"] for v in json.loads(state_path.read_text())["variants"]} == {
        "champion": 0.5,
        "challenger": 0.5,
    }
    shift_printed = capsys.readouterr()
    assert "champion=0.5, challenger=0.5" in shift_printed.out
    assert cli.main(["deploy", "--params", str(sagemaker_params), "status"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "InService" and status["endpoint_name"] == endpoint_name
    assert (
        cli.main(
            ["deploy", "--params", str(sagemaker_params), "shift", "--variant", "ghost", "--weight", "1"]
        )
        == 2
    )

    assert cli.main(["deploy", "--params", str(sagemaker_params), "delete"]) == 0
    assert not state_path.exists()
    printed = capsys.readouterr()
    assert cli.main(["deploy", "--params", str(sagemaker_params), "status"]) == 1
    status_printed = capsys.readouterr()
    assert json.loads(status_printed.out)["status"] == "NotFound"

    written = [p.read_text() for p in Path.cwd().rglob("*") if p.is_file()]
    for secret in ("canary-access-key-must-not-leak", "reviewpipe-secret-must-not-leak"):
        assert all(secret not in text for text in written)
        for out in (stage_printed, shift_printed, printed, status_printed):
            assert secret not in out.out + out.err
