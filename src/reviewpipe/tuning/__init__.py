"""Hyperparameter tuning (SageMaker HPO, locally, with Optuna): search spaces from conf/tune/
(space.py), the seeded study and its outputs (study.py), train-on-train / score-on-validation
objectives with pruning (objectives.py), writing the best values back into conf/ (writeback.py),
and `reviewpipe tune` (cli.py)."""

from reviewpipe.tuning.cli import add_arguments, run

__all__ = ["add_arguments", "run"]
