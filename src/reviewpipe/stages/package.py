"""Stage `package`: the registry's deployable version (and any other approved versions asked for)
as SageMaker model.tar.gz files, byte for byte the packages the gate judged (sha256 checked).

Never a model path: `package.versions` maps a tarball name to `deployable` (the newest Approved
version) or an Approved version number. A Rejected or pending version is never shipped.
"""

from __future__ import annotations

from omegaconf import DictConfig

from reviewpipe import registry, storage
from reviewpipe.errors import ReviewpipeError
from reviewpipe.schema import PackageParams
from reviewpipe.storage import StorageOptions


def resolve(reg: registry.Registry, wanted: str | int) -> registry.ModelPackage:
    """The version a tarball holds: `deployable` or an explicit number, which must be Approved."""
    if wanted == "deployable":
        entry = reg.deployable()
        if entry is None:
            raise ReviewpipeError(no_deployable_message(reg))
        return entry
    entry = reg.get(int(wanted))
    if entry.status != registry.APPROVED:
        raise ReviewpipeError(
            f"package.versions asks for {entry.describe()}, which is not Approved; approve it with "
            f"`reviewpipe registry approve {entry.version}` or ask for `deployable`."
        )
    return entry


def no_deployable_message(reg: registry.Registry) -> str:
    recent = ", ".join(
        f"{e.version} {e.status}" + (f" ({e.status_reason})" if e.status == registry.REJECTED else "")
        for e in reg.list()[-3:]
    )
    return (
        f"no deployable version in the registry {reg.uri} (newest: {recent or 'none registered'}). "
        "Approve one with `reviewpipe registry approve N` (`--force` for a version the gate rejected, "
        "after a person has reviewed it), or change the gate in conf/register/ (register.min_metric, "
        "register.fairness.max_gap, register.candidates) and run `dvc repro` again."
    )


def main(params: DictConfig) -> None:
    cfg = PackageParams.from_params(params)
    options = StorageOptions.from_params(params.get("storage"))
    reg = registry.Registry(cfg.registry_uri, options)
    newest = reg.latest()
    manifest = {}
    for name, wanted in cfg.versions.items():
        entry = resolve(reg, wanted)
        out = storage.join(cfg.out_dir, f"{name}.tar.gz")
        sha256 = reg.fetch_package(entry, out)
        manifest[name] = {
            "tarball": out,
            "registry": {"uri": cfg.registry_uri, "version": entry.version, "status": entry.status},
            "model_name": entry.model_name,
            "model_version": entry.package["model_version"],
            "kind": entry.package["kind"],
            "sha256": sha256,
            "bytes": entry.package["bytes"],
        }
        print(f"package: {out} <- registry {entry.describe()}, sha256 {sha256[:12]}")
        if wanted == "deployable" and newest is not None and newest.version != entry.version:
            why = f": {newest.status_reason}" if newest.status == registry.REJECTED else ""
            print(f"package: newest {newest.describe()}{why}; {entry.describe()} keeps serving")
    storage.write_json(storage.join(cfg.out_dir, "manifest.json"), manifest)
