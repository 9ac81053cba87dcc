"""Training runs from configs: sharded train step, checkpoints, observability, evaluation.

``train_and_evaluate(config, workdir)`` is the whole run (what ``python -m
robustjax.main`` calls); ``restore(workdir)`` loads a trained model for evaluation.
"""

from robustjax.training.checkpoints import latest_step
from robustjax.training.schema import base_config
from robustjax.training.schema import term
from robustjax.training.schema import validate
from robustjax.training.step import TrainState
from robustjax.training.step import make_mesh
from robustjax.training.step import make_train_step
from robustjax.training.train import NonFiniteError
from robustjax.training.train import evaluate
from robustjax.training.train import load_config
from robustjax.training.train import restore
from robustjax.training.train import train_and_evaluate
from robustjax.training.workdir import WorkdirConflictError
