"""Orbax checkpoints of a run in ``workdir/checkpoints``: save, resume, warm-start.

Each checkpoint holds two items: ``state`` (the whole :class:`TrainState`: params,
optimizer state, BatchNorm statistics, step, rng, controller state) saved with
``StandardSave``, and ``meta`` (JSON: step, data position, preemption count). Orbax
writes to a temporary directory and renames it when complete, so a run killed during a
save leaves the previous checkpoint intact and no partial one is ever restored.

Resume order (what :func:`restore_or_init` does):
  1. ``workdir/checkpoints`` has a finished checkpoint -> restore its latest step.
  2. else ``config.init_from`` names a workdir -> its latest params / batch stats start
     the run; optimizer state, step and controller are fresh.
  3. else a fresh initialisation from ``config.seed``.
Batches and random keys are functions of ``(seed, step)``, so restoring the step is
restoring the data position: a resumed run replays an uninterrupted one bit for bit.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = 'checkpoints'


def manager(workdir: str, *, max_to_keep: int = 3, create: bool = True
            ) -> ocp.CheckpointManager:
  """The CheckpointManager of ``workdir/checkpoints`` (keep-K, atomic saves)."""
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory, options=options, item_names=('state', 'meta'))


def save(mngr: ocp.CheckpointManager, state, *, preemption_count: int = 0,
         force: bool = False) -> bool:
  """Saves ``state`` at its step with its metadata; returns whether a save happened."""
  step = int(np.asarray(state.step.addressable_data(0)))
  if step in mngr.all_steps():
    return False
  meta = {'step': step, 'data_position': step, 'preemption_count': int(preemption_count)}
  saved = mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)),
                    force=force)
  mngr.wait_until_finished()
  return saved


def latest_step(workdir: str) -> int | None:
  """The latest finished checkpoint step in ``workdir`` (None when there is none)."""
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    return None
  with manager(workdir, create=False) as mngr:
    return mngr.latest_step()


def restore(mngr: ocp.CheckpointManager, abstract_state, step: int | None = None
            ) -> tuple[Any, dict]:
  """Restores ``(state, meta)`` at ``step`` (latest by default) into ``abstract_state``'s
  structure and shardings."""
  step = mngr.latest_step() if step is None else step
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  return restored['state'], dict(restored['meta'])


def restore_raw_state(workdir: str, step: int | None = None) -> Any:
  """The ``state`` item of another run's checkpoint as nested dicts/arrays (no target)."""
  with manager(workdir, create=False) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise ValueError(f'init_from: no checkpoint found in {workdir!r}')
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return restored['state']


def abstract(state) -> Any:
  """``jax.ShapeDtypeStruct`` tree (with shardings) of a live state, for restoring."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
