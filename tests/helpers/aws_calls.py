"""Every AWS request reviewpipe's own boto3 clients make, as botocore builds its parameters, and
hooks that run after chosen calls (to do what moto does not: run a job)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import boto3
import pytest


class Recorder:
    """(operation, parameters) of each request, upload bodies left out."""

    def __init__(self) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.log.append((model.name, copy.deepcopy({k: v for k, v in params.items() if k != "Body"})))

    def named(self, operation: str) -> list[dict[str, Any]]:
        return [p for op, p in self.log if op == operation]


def record_clients(
    monkeypatch: pytest.MonkeyPatch,
    services: tuple[str, ...],
    after: dict[str, Callable[..., None]] | None = None,
) -> Recorder:
    """Record `services`' requests of every client made from now on (this test only); `after` maps
    botocore events such as `after-call.sagemaker.CreateTrainingJob` to handlers."""
    recorder = Recorder()
    original = boto3.Session.client

    def client(self: boto3.Session, *args: Any, **kwargs: Any) -> Any:
        made = original(self, *args, **kwargs)
        for service in services:
            made.meta.events.register(f"before-parameter-build.{service}", recorder)
        for event, handler in (after or {}).items():
            made.meta.events.register(event, handler)
        return made

    monkeypatch.setattr(boto3.Session, "client", client)
    return recorder
