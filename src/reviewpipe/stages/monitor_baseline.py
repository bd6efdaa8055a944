"""Stage `monitor_baseline`: Model Monitor baseline (statistics.json + constraints.json) from the
training data and the champion's predictions, as `reviewpipe monitor baseline` builds it."""

from __future__ import annotations

from omegaconf import DictConfig

from reviewpipe.monitoring.cli import build_baseline


def main(params: DictConfig) -> None:
    out = build_baseline(params)
    print(f"monitor_baseline: statistics.json and constraints.json written to {out}")
