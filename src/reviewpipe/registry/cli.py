"""`reviewpipe registry list|show|find|approve|reject`: the model registry from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reviewpipe.config import load_params
from reviewpipe.registry.store import APPROVED, REJECTED, STATUSES, Registry, current_user
from reviewpipe.serving.package import file_sha256
from reviewpipe.storage import StorageOptions

DEFAULT_REGISTRY = "models/registry"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", help="registry URI (default: register.registry_uri, models/registry)")
    parser.add_argument(
        "--params", default="params.yaml", help="params file (for the registry URI, S3 options)"
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="every version, newest last")
    listing.add_argument("--status", choices=STATUSES, help="only versions with this status")
    listing.add_argument("--model", help="only versions of this model (e.g. bert)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    show = sub.add_parser("show", help="one version in full (number, `latest`, `approved` or `deployable`)")
    show.add_argument("version")
    find = sub.add_parser("find", help="the version a package belongs to (a model.tar.gz path or a sha256)")
    find.add_argument("package")
    approve = sub.add_parser("approve", help="PendingManualApproval -> Approved")
    approve.add_argument("version")
    approve.add_argument("--reason", default="", help="why (kept in the version's history)")
    approve.add_argument("--force", action="store_true", help="approve even a version the gate rejected")
    reject = sub.add_parser("reject", help="-> Rejected (the previous approved version is deployed again)")
    reject.add_argument("version")
    reject.add_argument("--reason", required=True, help="why (kept in the version's history)")


def _registry(args: argparse.Namespace) -> Registry:
    uri, options = args.registry, None
    if Path(args.params).exists():
        params = load_params(args.params)
        options = StorageOptions.from_params(params.get("storage"))
        if uri is None and "register" in params:
            uri = params.register.registry_uri
    return Registry(uri or DEFAULT_REGISTRY, options)


def run(args: argparse.Namespace) -> int:
    registry = _registry(args)
    if args.action == "list":
        return _list(registry, args)
    if args.action == "show":
        print(json.dumps(registry.get(args.version).to_dict(), indent=2, sort_keys=True))
        return 0
    if args.action == "find":
        sha256 = file_sha256(args.package) if Path(args.package).is_file() else args.package
        entry = registry.find_by_sha256(sha256)
        if entry is None:
            print(f"sha256 {sha256} is not the package of any version in {registry.uri}")
            return 1
        print(f"{entry.describe()}: sha256 {sha256}")
        return 0
    status = APPROVED if args.action == "approve" else REJECTED
    entry = registry.set_status(
        args.version, status, by=current_user(), reason=args.reason, force=getattr(args, "force", False)
    )
    print(f"version {entry.version} ({entry.model_name}) is now {entry.status}")
    if Path(args.params).exists():  # register.sagemaker: the mirrored model package follows
        from reviewpipe.aws.model_registry import mirror_for

        if (mirror := mirror_for(load_params(args.params))) is not None:
            mirror.set_status(entry, args.reason)
    deployable = registry.deployable()
    if deployable is None:
        print("no version is deployable now: `dvc repro package` fails until one is approved")
    else:
        print(f"deployable: {deployable.describe()}; `dvc repro` packages and deploys it")
    return 0


def _list(registry: Registry, args: argparse.Namespace) -> int:
    entries = registry.list(model_name=args.model, status=args.status)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    if not entries:
        print(f"no versions in {registry.uri}")
        return 0
    deployable = registry.deployable()
    print(f"{'version':>7}  {'model':<10} {'status':<22} {'metric':<28} {'sha256':<13} {'commit':<9} created")
    for e in entries:
        value = e.gate.get("metric_value")
        metric = f"{e.gate.get('select_on', '?')} {e.gate.get('metric', '?')}=" + (
            "?" if value is None else f"{value:.4f}"
        )
        mark = " *" if deployable and e.version == deployable.version else ""
        print(
            f"{e.version:>7}  {e.model_name:<10} {e.status:<22} {metric:<28} {(e.sha256 or '-')[:12]:<13} "
            f"{(e.git_commit or '-')[:8]:<9} {e.created_at}{mark}"
        )
    if deployable:
        print(f"* deployable: version {deployable.version} (what `package` ships)")
    return 0
