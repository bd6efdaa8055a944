"""Model lifecycle after evaluation: the gate (`gate`), the version store (`store`), lineage hashes
(`lineage`) and `reviewpipe registry` (`cli`). The names below are the package's public API."""

from reviewpipe.registry.gate import (
    Check,
    GateDecision,
    choose_champion,
    describe,
    fairness_check,
    quality_check,
    selection_view,
    serving_check,
)
from reviewpipe.registry.lineage import git_state, hash_params, hash_paths
from reviewpipe.registry.store import (
    APPROVAL_MODES,
    APPROVED,
    PENDING,
    REJECTED,
    STATUSES,
    ModelPackage,
    Registry,
    current_user,
    file_sha256,
    initial_status,
)

__all__ = [
    "APPROVAL_MODES",
    "APPROVED",
    "PENDING",
    "REJECTED",
    "STATUSES",
    "Check",
    "GateDecision",
    "ModelPackage",
    "Registry",
    "choose_champion",
    "current_user",
    "describe",
    "git_state",
    "hash_params",
    "hash_paths",
    "initial_status",
    "quality_check",
    "fairness_check",
    "file_sha256",
    "selection_view",
    "serving_check",
]
