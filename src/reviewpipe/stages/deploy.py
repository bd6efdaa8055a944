"""Stage `deploy`: put the packaged variants behind an endpoint (deploy.target: local | sagemaker)
and record what is deployed (endpoint URL/ARN, variants, weights) in deploy.state_path."""

from __future__ import annotations

from omegaconf import DictConfig

from reviewpipe.config import section, to_dict
from reviewpipe.deploy import TARGETS, variant_configs, write_state
from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions


def main(params: DictConfig) -> None:
    cfg = section(params, "deploy")
    variants = variant_configs(cfg)
    serve = to_dict(params.get("serve")) or {}
    if cfg.target == "local":
        from reviewpipe.deploy import local

        state = local.deploy(
            variants, local.LocalSettings.from_mapping(to_dict(cfg.get("local"))), serve, cfg.endpoint_name
        )
    elif cfg.target == "sagemaker":
        from reviewpipe.deploy import sagemaker
        from reviewpipe.serving.server import ServeSettings

        settings = ServeSettings.from_mapping(serve)
        if settings.backend != "torch":
            raise ReviewpipeError(
                "serve.backend=onnx is local-only: the SageMaker container installs only "
                "code/requirements.txt (no onnxruntime); deploy with serve.backend=torch"
            )
        deployer = sagemaker.SageMakerDeployer(
            sagemaker.SageMakerSettings.from_mapping(to_dict(cfg.get("sagemaker"))),
            s3_endpoint_url=StorageOptions.from_params(params.get("storage")).endpoint_url,
        )
        state = deployer.deploy(cfg.endpoint_name, variants, settings.environment())
    else:
        raise ReviewpipeError(
            f"deploy.target must be one of {TARGETS}, not {cfg.target!r}; "
            "pick the conf group with `dvc exp run -S deploy=sagemaker`"
        )
    write_state(cfg.state_path, state)
    print(f"deploy: state written to {cfg.state_path}")
