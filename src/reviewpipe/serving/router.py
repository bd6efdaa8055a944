"""ProductionVariants, locally: weighted routing between named model variants.

Mirrors SageMaker: traffic splits by relative weight; a request naming a variant in
X-Amzn-SageMaker-Target-Variant goes there whatever its weight (even 0);
update_endpoint_weights_and_capacities changes the weights at runtime.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Mapping

from reviewpipe.errors import ReviewpipeError

TARGET_VARIANT_HEADER = "X-Amzn-SageMaker-Target-Variant"
INVOKED_VARIANT_HEADER = "X-Amzn-Invoked-Production-Variant"


def parse_variant(spec: str) -> tuple[str, str, float]:
    """`NAME=PATH:WEIGHT` (weight optional, default 1) -> (name, path, weight)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name.strip() or not rest:
        raise ReviewpipeError(
            f"--variant {spec!r}: expected NAME=PATH[:WEIGHT], e.g. champion=models/package/model.tar.gz:0.8"
        )
    path, weight = rest, 1.0
    head, colon, tail = rest.rpartition(":")
    if colon and head:
        try:
            weight = float(tail)
            path = head
        except ValueError:
            path = rest  # a ':' that is part of the path (s3://..., C:...)
    if not math.isfinite(weight) or weight < 0:
        raise ReviewpipeError(f"--variant {spec!r}: weight must be a finite number >= 0")
    return name.strip(), path, weight


class VariantRouter:
    """Thread-safe weighted choice among variant names."""

    def __init__(self, weights: Mapping[str, float], seed: int | None = None) -> None:
        if not weights:
            raise ReviewpipeError("at least one variant is needed")
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._weights: dict[str, float] = {}
        self.set_weights(weights, require_all=True)

    @property
    def names(self) -> list[str]:
        return list(self._weights)

    def weights(self) -> dict[str, float]:
        with self._lock:
            return dict(self._weights)

    def set_weights(self, weights: Mapping[str, float], require_all: bool = False) -> dict[str, float]:
        """Update some or all weights (unknown names, negative, infinite, NaN or all-zero weights are refused)."""
        with self._lock:
            known = self._weights or dict.fromkeys(weights, 0.0)
            unknown = sorted(set(weights) - set(known))
            if unknown:
                raise ReviewpipeError(f"unknown variant(s) {unknown}; variants are {sorted(known)}")
            updated = dict(known)
            for name, weight in weights.items():
                if (
                    isinstance(weight, bool)
                    or not isinstance(weight, int | float)
                    or not math.isfinite(weight)
                    or weight < 0
                ):
                    raise ReviewpipeError(f"weight for {name!r} must be a finite number >= 0, not {weight!r}")
                updated[name] = float(weight)
            if require_all and set(weights) != set(updated):
                raise ReviewpipeError("every variant needs a weight")
            if sum(updated.values()) <= 0:
                raise ReviewpipeError("at least one variant needs a weight above 0")
            self._weights = updated
            return dict(updated)

    def choose(self, target: str | None = None) -> str:
        """The pinned `target` if given (must exist), else a weighted random variant."""
        with self._lock:
            if target:
                if target not in self._weights:
                    raise ReviewpipeError(
                        f"{TARGET_VARIANT_HEADER} names unknown variant {target[:64]!r}; "
                        f"variants are {sorted(self._weights)}"
                    )
                return target
            names = list(self._weights)
            return self._random.choices(names, weights=[self._weights[n] for n in names])[0]
