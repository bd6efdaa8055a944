"""Stage `deploy`: put the packaged variants behind an endpoint (deploy.target: local | sagemaker)
and record what is deployed (endpoint URL/ARN, variants, weights, registry versions) in
deploy.state_path. Every variant's package must be an Approved registry version (by sha256)."""

from __future__ import annotations

from omegaconf import DictConfig

from reviewpipe import registry
from reviewpipe.config import section, to_dict
from reviewpipe.deploy import TARGETS, VariantConfig, variant_configs, write_state
from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving.package import file_sha256
from reviewpipe.storage import StorageOptions


def approved_versions(variants: list[VariantConfig], reg: registry.Registry) -> dict[str, dict[str, object]]:
    """{variant: registry record} for each variant's package; refuses one that is not Approved."""
    records = {}
    for variant in variants:
        sha256 = file_sha256(variant.package)
        entry = reg.find_by_sha256(sha256, status=registry.APPROVED)
        if entry is None:
            known = reg.find_by_sha256(sha256)
            what = known.describe() if known else "not a registry version"
            raise ReviewpipeError(
                f"deploy.variants {variant.name!r}: {variant.package} (sha256 {sha256[:12]}) is {what}; "
                "only Approved registry versions are deployed. Build the packages with `dvc repro package`."
            )
        records[variant.name] = {
            "registry_uri": reg.uri,
            "version": entry.version,
            "model_name": entry.model_name,
            "sha256": sha256,
        }
    return records


def main(params: DictConfig) -> None:
    cfg = section(params, "deploy")
    variants = variant_configs(cfg)
    options = StorageOptions.from_params(params.get("storage"))
    versions = approved_versions(variants, registry.Registry(str(params.register.registry_uri), options))
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
        target = sagemaker.SageMakerSettings.from_mapping(to_dict(cfg.get("sagemaker")))
        deployer = sagemaker.SageMakerDeployer(target, s3_endpoint_url=options.endpoint_url)
        state = deployer.deploy(
            cfg.endpoint_name,
            variants,
            settings.container_environment(target.quantize),
            data_capture=sagemaker.data_capture_config(settings.capture),
        )
    else:
        raise ReviewpipeError(
            f"deploy.target must be one of {TARGETS}, not {cfg.target!r}; "
            "pick the conf group with `dvc exp run -S deploy=sagemaker`"
        )
    state["registry_versions"] = versions
    write_state(cfg.state_path, state)
    served = ", ".join(f"{name}: version {r['version']} ({r['model_name']})" for name, r in versions.items())
    print(f"deploy: serving {served}; state written to {cfg.state_path}")
