"""`reviewpipe stage NAME`: one thin module per DVC stage (reviewpipe.stages.NAME.main(params))."""

from __future__ import annotations

import argparse
import importlib

from reviewpipe.config import load_params
from reviewpipe.errors import ReviewpipeError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="stage name as in dvc.yaml, e.g. ingest")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="override a param for this run only, e.g. -S lake.uri=s3://bucket/lake (not tracked by DVC)",
    )


def run(args: argparse.Namespace) -> int | None:
    try:
        module = importlib.import_module(f"reviewpipe.stages.{args.name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"reviewpipe.stages.{args.name}":
            raise ReviewpipeError(f"unknown stage {args.name!r}; see dvc.yaml for the stage names") from exc
        raise
    return module.main(load_params(args.params, args.overrides))
