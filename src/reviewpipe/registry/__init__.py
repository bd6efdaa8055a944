"""Model lifecycle after evaluation: the gate (`gate`), the version store (`store`), lineage hashes
(`lineage`) and `reviewpipe registry` (`cli`). The names below are the package's public API."""

from reviewpipe.registry.gate import (
    GateDecision,
    choose_champion,
    evaluate_gate,
    largest_gap,
    selection_view,
)
from reviewpipe.registry.lineage import git_state, hash_params, hash_paths
from reviewpipe.registry.store import (
    APPROVED,
    PENDING,
    REJECTED,
    STATUSES,
    ModelPackage,
    Registry,
    current_user,
)

__all__ = [
    "APPROVED",
    "PENDING",
    "REJECTED",
    "STATUSES",
    "GateDecision",
    "ModelPackage",
    "Registry",
    "choose_champion",
    "current_user",
    "evaluate_gate",
    "git_state",
    "hash_params",
    "hash_paths",
    "largest_gap",
    "selection_view",
]
