"""The `reviewpipe` command.

Each subcommand lives in its own module that defines `add_arguments(parser)` and
`run(args) -> int | None`; modules are imported only when their command runs, so
`reviewpipe query` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from reviewpipe.errors import ReviewpipeError

# command -> (module, one-line help). Pipeline stages are also commands (`reviewpipe stage NAME`).
COMMANDS: dict[str, tuple[str, str]] = {
    "stage": ("reviewpipe.stages", "run one DVC stage by name (what dvc.yaml calls)"),
    "synth": ("reviewpipe.data.synth", "write a synthetic Kaggle-schema reviews CSV"),
    "ingest": (
        "reviewpipe.data.cli",
        "append a raw batch to the lake (idempotent; changed rows become versions)",
    ),
    "query": ("reviewpipe.analytics.query", "run ad-hoc SQL against the catalog"),
    "registry": ("reviewpipe.registry.cli", "list, show or approve registered models"),
    "serve": ("reviewpipe.serving.server_cli", "serve a model over SageMaker's HTTP contract"),
    "deploy": ("reviewpipe.deploy.cli", "shift variant weights or delete a deployment"),
    "predict": ("reviewpipe.serving.batch", "batch predictions over parquet/CSV/JSONL (local or s3://)"),
    "monitor": ("reviewpipe.monitoring.cli", "data-quality and drift checks against a baseline"),
    "review": ("reviewpipe.review.cli", "human review web page for low-confidence predictions"),
    "tune": ("reviewpipe.tuning", "Optuna hyperparameter search"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reviewpipe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            mod = importlib.import_module(module) if name in _requested(sys.argv) else None
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("reviewpipe"):
                mod = None  # command not built yet: it says so when run
            else:
                raise
        if mod is not None and hasattr(mod, "add_arguments"):
            mod.add_arguments(p)
    return parser


def _requested(argv: list[str]) -> set[str]:
    # Only the requested command's module is imported to build its arguments.
    return {a for a in argv[1:] if a in COMMANDS}


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    args = build_parser().parse_args(sys.argv[1:])
    try:
        module = importlib.import_module(args._module)
        code = module.run(args)
    except ReviewpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
