"""Progress lines for the AutoGluon stage: one line as each model starts and ends.

AutoGluon reports a model only once it has finished, and a gradient-boosted model on 10k n-gram
columns can train for minutes; in a `dvc repro` log that is a long silence. This callback prints
which model is training, how much of the time limit is left, and each finished model's
validation score and fit time.
"""

from __future__ import annotations

import time
from typing import Any

from autogluon.core.callbacks import AbstractCallback

from reviewpipe.progress import ProgressLine, format_duration


class AutoMLProgress(AbstractCallback):
    """An AutoGluon callback (`TabularPredictor.fit(callbacks=[...])`) printing progress lines;
    `total_models` counts the listed families plus the weighted ensemble. Module level: AutoGluon
    pickles its trainer, callbacks included."""

    def __init__(self, total_models: int) -> None:
        super().__init__()
        self.total_models = total_models
        self.line = ProgressLine("automl", total_models, 1, unit="model")
        self.done = 0

    def _before_model_fit(
        self,
        trainer: Any,
        model: Any,
        time_limit: float | None = None,
        stack_name: str = "core",
        level: int = 1,
        **kwargs: Any,
    ) -> tuple[bool, bool]:
        limit = getattr(trainer, "_time_limit", None)
        start = getattr(trainer, "_time_train_start", None)
        left = (
            f", {format_duration(limit - (time.time() - start))} of the time limit left"
            if limit and start
            else ""
        )
        model_limit = f" (at most {format_duration(time_limit)})" if time_limit else ""
        print(
            f"automl: fitting {model.name}{model_limit}, model {self.done + 1} of {self.total_models}{left}",
            flush=True,
        )
        return False, False

    def _after_model_fit(
        self, trainer: Any, model_names: list[str], stack_name: str = "core", level: int = 1, **kwargs: Any
    ) -> bool:
        for name in model_names:
            self.done += 1
            fields: dict[str, Any] = {"fitted": name}
            for attribute, label in (("val_score", "validation score"), ("fit_time", "fit seconds")):
                try:
                    value = trainer.get_model_attribute(name, attribute)
                except Exception:  # an attribute a model kind does not record
                    continue
                if value is not None:
                    fields[label] = float(value)
            self.line.update(self.done, force=True, **fields)
        return False
