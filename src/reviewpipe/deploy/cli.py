"""`reviewpipe deploy status|shift|delete`: look at, re-weight or tear down what `stage deploy` deployed.

The target and endpoint come from the deployment state file (deploy.state_path) when it exists,
else from params.yaml's `deploy` section. `shift` is a runtime change, like SageMaker's
update_endpoint_weights_and_capacities: it rewrites the state file, so `dvc repro` sees the
deploy stage changed and restores the weights in params (change them there to keep them).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from reviewpipe.config import load_params, section, to_dict
from reviewpipe.deploy import read_state, remove_state, write_state
from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file with a `deploy` section")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("status", help="is the endpoint up, and with which weights")
    shift = sub.add_parser(
        "shift", help="change variant weights at runtime (update_endpoint_weights_and_capacities)"
    )
    shift.add_argument(
        "--variant", action="append", required=True, help="variant name (repeat with --weight)"
    )
    shift.add_argument(
        "--weight",
        action="append",
        required=True,
        type=float,
        help="its new weight (one per --variant, same order)",
    )
    sub.add_parser(
        "delete", help="stop the local server, or delete the SageMaker endpoint, config and models"
    )


class Deployment:
    """What `stage deploy` deployed, and the client to reach it."""

    def __init__(self, params: Any) -> None:
        self.cfg = section(params, "deploy")
        self.state_path = str(self.cfg.state_path)
        self.state = read_state(self.state_path)
        self.target = (self.state or {}).get("target") or str(self.cfg.target)
        self.endpoint_name = (self.state or {}).get("endpoint_name") or str(self.cfg.endpoint_name)
        self.storage = StorageOptions.from_params(params.get("storage"))

    def local(self) -> Any:
        from reviewpipe.deploy.local import LocalEndpoint, LocalSettings

        return LocalEndpoint(LocalSettings.from_mapping(to_dict(self.cfg.get("local"))))

    def sagemaker(self) -> Any:
        from reviewpipe.deploy.sagemaker import SageMakerDeployer, SageMakerSettings

        settings = SageMakerSettings.from_mapping(to_dict(self.cfg.get("sagemaker")))
        if self.state and self.state.get("region") and not settings.region:
            settings = SageMakerSettings.from_mapping(
                {**to_dict(self.cfg.get("sagemaker")), "region": self.state["region"]}
            )
        return SageMakerDeployer(settings, s3_endpoint_url=self.storage.endpoint_url)

    def status(self) -> dict[str, Any]:
        live = (
            self.local().status() if self.target == "local" else self.sagemaker().status(self.endpoint_name)
        )
        return {
            "target": self.target,
            "endpoint_name": self.endpoint_name,
            "state_file": self.state_path,
            "deployed": self.state is not None,
            **live,
        }

    def shift(self, weights: dict[str, float]) -> dict[str, float]:
        if self.target == "local":
            current = self.local().shift(weights)
        else:
            current = self.sagemaker().shift(self.endpoint_name, weights)
        if self.state:
            for variant in self.state.get("variants", []):
                if variant["name"] in current:
                    variant["weight"] = current[variant["name"]]
            write_state(self.state_path, self.state)
        return current

    def delete(self) -> list[str]:
        if self.target == "local":
            deleted = ["local server"] if self.local().stop() else []
        else:
            deleted = self.sagemaker().delete(self.endpoint_name)
        remove_state(self.state_path)
        return deleted


def run(args: argparse.Namespace) -> int:
    deployment = Deployment(load_params(args.params))
    if args.action == "status":
        status = deployment.status()
        print(json.dumps(status, indent=2, sort_keys=True, default=str))
        healthy = status.get("status") == "InService" or (status.get("running") and status.get("ping") == 200)
        return 0 if healthy else 1
    if args.action == "shift":
        if len(args.variant) != len(args.weight):
            raise ReviewpipeError("give one --weight per --variant, e.g. --variant challenger --weight 0.5")
        weights = dict(zip(args.variant, args.weight, strict=True))
        current = deployment.shift(weights)
        print("weights: " + ", ".join(f"{name}={weight:g}" for name, weight in current.items()))
        return 0
    deleted = deployment.delete()
    print(
        "deleted: "
        + (", ".join(deleted) if deleted else f"nothing was running for {deployment.endpoint_name}")
    )
    return 0
