"""The evaluation sets (`evaluate.sets`) as prepared rows: what evaluate scores every model on, and
what register scores the packaged champion on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reviewpipe.evaluation.human import human_rows
from reviewpipe.evaluation.scoring import EvaluationSet
from reviewpipe.evaluation.served import natural_rows
from reviewpipe.models.splits import read_split
from reviewpipe.storage import StorageOptions


def load_evaluation_sets(
    sets: Mapping[str, Any],
    data_dir: str,
    options: StorageOptions | None = None,
    only: Sequence[str] | None = None,
) -> list[EvaluationSet]:
    """`evaluate.sets`: name -> {split, mix: balanced (the split file) | natural (the split's rows
    before balancing, from unbalanced.parquet) | human (those of its rows a person labelled, against
    the human label; skipped while there are none), role: select | report}; `only`: just these names."""
    unbalanced = None
    loaded = []
    for name, spec in sets.items():
        if only is not None and name not in only:
            continue
        if str(spec.mix) in ("natural", "human") and unbalanced is None:
            unbalanced = read_split(data_dir, "unbalanced", options)
        if str(spec.mix) == "natural":
            frame = natural_rows(unbalanced, str(spec.split))
        elif str(spec.mix) == "human":
            frame = human_rows(unbalanced, str(spec.split))
            if frame.empty:
                print(f"evaluate: {name}: no human-labelled {spec.split} rows yet (`reviewpipe review`)")
                continue
        else:
            frame = read_split(data_dir, str(spec.split), options)
        loaded.append(EvaluationSet(str(name), frame, str(spec.role)))
    return loaded
