"""Stage `register`: quality + fairness gate on the champion, recorded in the model registry."""

from __future__ import annotations

from omegaconf import DictConfig

from reviewpipe import registry, storage
from reviewpipe.config import section, to_dict
from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions


def main(params: DictConfig) -> None:
    cfg = section(params, "register")
    options = StorageOptions.from_params(params.get("storage"))
    storage.require_exists(cfg.metrics_uri, "evaluation metrics", "run `dvc repro evaluate` first.", options)
    metrics = storage.read_json(cfg.metrics_uri, options)
    fairness = (
        storage.read_json(cfg.fairness_uri, options) if storage.exists(cfg.fairness_uri, options) else None
    )

    select_on = str(cfg.select_on)
    selected, selected_fairness = registry.selection_view(metrics, fairness, select_on)
    decision = registry.evaluate_gate(
        selected,
        selected_fairness,
        metric=cfg.metric,
        min_metric=float(cfg.min_metric),
        max_group_gap=float(cfg.max_group_gap),
        candidates=list(cfg.candidates or []) or None,
    )
    champion = decision.champion
    model_path = str(to_dict(cfg.model_paths).get(champion, f"models/{champion}"))
    commit, dirty = registry.git_state()
    status = registry.PENDING if decision.passed else registry.REJECTED
    if decision.passed and cfg.auto_approve:
        status = registry.APPROVED
    entry = registry.Registry(cfg.registry_uri, options).register(
        champion,
        model_path,
        status=status,
        metrics=dict(metrics["models"][champion]),  # every evaluation set: validation and test
        gate=decision.to_dict(),
        reason="; ".join(decision.reasons) or "passed the quality and fairness gate",
        model_hash=registry.hash_paths([model_path]),
        params_hash=registry.hash_params(to_dict(params)),
        data_hash=registry.hash_paths([cfg.data_uri]),
        git_commit=commit,
        git_dirty=dirty,
    )
    from reviewpipe.aws.model_registry import mirror_for

    if (mirror := mirror_for(params)) is not None:  # register.sagemaker: the SageMaker Model Registry too
        mirror.mirror(entry)

    summary = {
        "version": entry.version,
        "champion": champion,
        "model_path": model_path,
        "status": entry.status,
        "passed": decision.passed,
        "select_on": select_on,
        "metric": decision.metric,
        "metric_value": decision.metric_value,
        "fairness_gap": decision.fairness_gap,
        "reasons": list(decision.reasons),
    }
    storage.write_json(cfg.decision_uri, summary, options)
    verdict = "passed" if decision.passed else "REJECTED: " + "; ".join(decision.reasons)
    print(
        f"register: champion {champion} ({select_on} {decision.metric}={decision.metric_value:.4f}) "
        f"-> version {entry.version} {entry.status}; gate {verdict}"
    )
    if not decision.passed and cfg.fail_on_reject:
        raise ReviewpipeError(
            f"quality gate rejected {champion} (registry version {entry.version}): "
            + "; ".join(decision.reasons)
            + ". Improve the model or relax register.min_metric / "
            "register.max_group_gap (or set register.fail_on_reject=false to continue)."
        )
