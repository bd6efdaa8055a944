"""Stage `register`: choose the champion on validation, package it, gate it, record it in the registry.

The champion is the best candidate by `register.metric` on `register.select_on` (validation). Its
model.tar.gz is built here, once, and stored in the registry with the version, so the bytes that
were gated are the bytes `package` ships later (even after the model is retrained). The gate checks
quality (`register.min_metric`, on the package's served figure: calibration and decision rule, the
deploy target's backend), serving (served vs fp32) and fairness (group-vs-rest error-rate gaps with bootstrap
intervals on the selection set's rows, `register.fairness`); its full record goes to
`register.report_uri`. The version is Rejected when a check fails, else Approved
(`register.approval: auto`) or PendingManualApproval (`manual`, until `reviewpipe registry approve N`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from reviewpipe import SENTIMENTS, registry, storage
from reviewpipe.config import to_dict
from reviewpipe.errors import ReviewpipeError
from reviewpipe.evaluation.gaps import Excluded, Gap, group_gaps
from reviewpipe.schema import PackageParams, RegisterParams
from reviewpipe.serving.package import build_options as package_build_options
from reviewpipe.serving.package import build_package
from reviewpipe.storage import StorageOptions


def main(params: DictConfig) -> None:
    cfg = RegisterParams.from_params(params)
    build = PackageParams.from_params(params)
    options = StorageOptions.from_params(params.get("storage"))
    storage.require_exists(cfg.metrics_uri, "evaluation metrics", "run `dvc repro evaluate` first.", options)
    metrics = storage.read_json(cfg.metrics_uri, options)

    selected = registry.selection_view(metrics, cfg.select_on)
    champion, ranking = registry.choose_champion(selected, cfg.metric, cfg.candidates)
    if champion not in cfg.model_paths:
        raise ReviewpipeError(
            f"register.model_paths has no path for the champion {champion!r} ({sorted(cfg.model_paths)})."
        )
    model_path = cfg.model_paths[champion]
    calibration = calibrations(build.calibration_uri, options).get(champion)
    gaps, excluded = champion_gaps(cfg, champion, options, calibration)
    reg = registry.Registry(cfg.registry_uri, options)
    with tempfile.TemporaryDirectory(prefix="reviewpipe-register-") as tmp:
        tarball = str(Path(tmp) / "model.tar.gz")
        info = build_package(
            model_path,
            tarball,
            model_name=champion,
            calibration=calibration,
            **package_build_options(to_dict(params.package), options),
        )
        serving = serving_figures(params, cfg, tarball, options)
        package = {
            **reg.store_package(tarball),
            "model_version": info["model_version"],
            "kind": info["kind"],
            "calibrated": info["calibrated"],
        }
    checks = (
        registry.quality_check(
            cfg.metric,
            dict(ranking)[champion],
            cfg.min_metric,
            cfg.select_on,
            served=served_metric(serving, cfg.select_on, cfg.metric),
        ),
        registry.fairness_check(gaps, excluded, cfg.fairness.max_gap, cfg.fairness.confidence),
        registry.serving_check(serving, cfg.select_on, cfg.max_serving_drop, cfg.min_serving_agreement),
    )
    decision = registry.GateDecision(
        champion, cfg.select_on, cfg.metric, dict(ranking)[champion], checks, tuple(ranking)
    )
    fairness_record = {"gaps": [g.to_dict() for g in gaps], "excluded": [e.to_dict() for e in excluded]}

    commit, dirty = registry.git_state()
    entry = reg.register(
        champion,
        model_path,
        status=registry.initial_status(decision.passed, cfg.approval),
        metrics=dict(metrics["models"][champion]),  # every evaluation set: validation and test
        gate={**decision.to_dict(), "approval": cfg.approval, "fairness": fairness_record},
        package=package,
        serving=serving,
        reason="; ".join(decision.reasons) or "passed the gate",
        model_hash=registry.hash_paths([model_path]),
        params_hash=registry.hash_params(to_dict(params)),
        data_hash=registry.hash_paths([cfg.data_uri]),
        git_commit=commit,
        git_dirty=dirty,
    )
    from reviewpipe.aws.model_registry import mirror_for

    if (mirror := mirror_for(params)) is not None:  # register.sagemaker: the SageMaker Model Registry too
        mirror.mirror(entry)

    deployable = reg.deployable()
    storage.write_json(
        cfg.report_uri, {"version": entry.version, "status": entry.status, **entry.gate}, options
    )
    storage.write_json(
        cfg.decision_uri,
        {
            "version": entry.version,
            "champion": champion,
            "model_path": model_path,
            "status": entry.status,
            "approval": cfg.approval,
            "passed": decision.passed,
            "select_on": cfg.select_on,
            "metric": decision.metric,
            "metric_value": decision.metric_value,
            "checks": {c.name: c.passed for c in decision.checks},
            "fairness_gaps_exceeding": len(decision.checks[1].inputs["exceeding"]),
            "serving": {k: decision.checks[2].inputs[k] for k in ("backend", "drop", "agreement")},
            "reasons": list(decision.reasons),
            "sha256": entry.sha256,
            "deployable_version": deployable.version if deployable else None,
        },
        options,
    )
    print(
        f"register: champion {champion} ({cfg.select_on} {decision.metric}={decision.metric_value:.4f}) "
        f"-> version {entry.version} {entry.status}"
    )
    for check in decision.checks:
        print(f"register: {check.name} {'passed' if check.passed else 'FAILED'}: {check.detail}")
    print(f"register: {outcome_line(entry, deployable)}")
    if not decision.passed and cfg.fail_on_reject:
        raise ReviewpipeError(
            f"the gate rejected {champion} (registry version {entry.version}): "
            + "; ".join(decision.reasons)
            + ". Improve the model or change the gate in conf/register/ "
            "(or set register.fail_on_reject=false to continue)."
        )


def serving_figures(params: DictConfig, cfg: RegisterParams, tarball: str, options: StorageOptions) -> dict:
    """The packaged artifact scored through its own code/inference.py on register.serving_sets: at
    fp32 (the torch backend) and with the backend the deploy target serves (local: serve.backend +
    serve.quantize; sagemaker: deploy.sagemaker.backend + quantize)."""
    from reviewpipe.evaluation.sets import load_evaluation_sets
    from reviewpipe.models.splits import prepared_dir
    from reviewpipe.serving.score import REFERENCE_BACKEND, deployed_backend, score_package

    backend = deployed_backend(to_dict(params.serve), to_dict(params.get("deploy")))
    sets = load_evaluation_sets(params.evaluate.sets, prepared_dir(params), options, only=cfg.serving_sets)
    missing = sorted(set(cfg.serving_sets) - {s.name for s in sets})
    if missing:
        raise ReviewpipeError(f"register.serving_sets names {missing}, which evaluate.sets does not provide.")
    figures: dict = {"backend": backend, "reference_backend": REFERENCE_BACKEND, "sets": {}}
    for evaluation_set in sets:
        fp32 = score_package(tarball, evaluation_set.frame, REFERENCE_BACKEND)
        served = (
            fp32 if backend == REFERENCE_BACKEND else score_package(tarball, evaluation_set.frame, backend)
        )
        figures["sets"][evaluation_set.name] = {
            "fp32": fp32.to_dict(),
            "served": served.to_dict(),
            **served.compare(fp32),
        }
    return figures


def served_metric(serving: dict, select_on: str, metric: str) -> float | None:
    """`metric` of the packaged artifact as served on the selection set (None when the serving
    figures do not compute it, e.g. ROC AUC: the quality check then reads the evaluated model's)."""
    value = serving["sets"].get(select_on, {}).get("served", {}).get(metric)
    return None if value is None else float(value)


def champion_gaps(
    cfg: RegisterParams, champion: str, options: StorageOptions, calibration: dict | None = None
) -> tuple[list[Gap], list[Excluded]]:
    """The fairness gate's measurements: the champion's group-vs-rest gaps on the selection set, for
    the labels it will serve: with a `calibration` (shipped in its package), its decision rule applied
    to the evaluated probabilities, as the package's inference.py applies it."""
    storage.require_exists(
        cfg.predictions_uri, "evaluation predictions", "run `dvc repro evaluate` first.", options
    )
    fs, path = storage.get_fs(cfg.predictions_uri, options)
    with fs.open(path, "rb") as f:
        predictions = pd.read_parquet(f)
    rows = predictions[predictions["set"] == cfg.select_on]
    needed = ["sentiment", f"{champion}_predicted", *cfg.fairness.features]
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise ReviewpipeError(
            f"{cfg.predictions_uri} lacks columns {missing} for the fairness gate; list the features in "
            "evaluate.fairness.features (evaluate writes them beside the predictions) and rerun evaluate."
        )
    label_id = {s: i for i, s in enumerate(SENTIMENTS)}
    predicted = rows[f"{champion}_predicted"].map(label_id).to_numpy()
    if calibration is not None:
        from reviewpipe.evaluation.calibration import Calibration
        from reviewpipe.evaluation.metrics import CLASS_NAMES

        columns = [f"{champion}_p_{CLASS_NAMES[s]}" for s in SENTIMENTS]
        if missing := [c for c in columns if c not in rows.columns]:
            raise ReviewpipeError(
                f"{cfg.predictions_uri} lacks {missing}, the champion's probabilities the fairness gate "
                "needs to apply its calibration; rerun `dvc repro evaluate`."
            )
        rule = Calibration.from_json(calibration)
        predicted = rule.decide(rule.probabilities(rows[columns].to_numpy(dtype=float)))
    return group_gaps(
        rows["sentiment"].map(label_id).to_numpy(),
        predicted,
        rows[list(cfg.fairness.features)].reset_index(drop=True),
        cfg.fairness.gaps,
        cfg.fairness.min_support,
        cfg.fairness.resamples,
        cfg.fairness.confidence,
        cfg.fairness.seed,
    )


def calibrations(uri: str | None, options: StorageOptions | None = None) -> dict[str, dict]:
    """evaluate's calibration per model name ({} when package.calibration_uri is null)."""
    if uri is None:
        return {}
    storage.require_exists(
        uri,
        "evaluate's calibration.json",
        "Run `dvc repro evaluate`, or set package.calibration_uri=null to ship uncalibrated probabilities.",
        options,
    )
    return {name: report["calibration"] for name, report in storage.read_json(uri, options)["models"].items()}


def outcome_line(entry: registry.ModelPackage, deployable: registry.ModelPackage | None) -> str:
    """One line: what happened to the new version and which version is served as a result."""
    if entry.status == registry.APPROVED:
        return f"version {entry.version} passed the gate and is approved; `package` ships it"
    if entry.status == registry.PENDING:
        head = f"version {entry.version} passed the gate; approve it with `reviewpipe registry approve {entry.version}`"
    else:
        head = f"version {entry.version} REJECTED: {entry.status_reason}"
    if deployable is not None:
        return f"{head}; {deployable.describe()} keeps serving"
    return f"{head}; no version is deployable, so `package` will fail until one is approved"
