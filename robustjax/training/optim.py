"""Optax optimizers and learning-rate schedules built from ``config.optimizer``."""

from __future__ import annotations

import optax


def learning_rate_schedule(opt, num_train_steps: int) -> optax.Schedule:
  """The schedule ``step -> lr`` named by ``opt.schedule``, with optional linear warm-up.

  ``'piecewise'`` multiplies by ``decay_factor`` at each fraction in ``opt.boundaries``
  (the papers' "decay by 10x at epochs 100 and 150"); ``'cosine'`` decays to 0.
  """
  lr = float(opt.lr)
  warmup = int(opt.warmup_steps)
  rest = max(int(num_train_steps) - warmup, 1)
  if opt.schedule == 'constant':
    main = optax.constant_schedule(lr)
  elif opt.schedule == 'piecewise':
    bounds = {max(int(round(b * num_train_steps)) - warmup, 0): float(opt.decay_factor)
              for b in opt.boundaries}
    main = optax.piecewise_constant_schedule(lr, bounds)
  elif opt.schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, rest)
  else:
    raise ValueError(f'config.optimizer.schedule: unknown {opt.schedule!r}')
  if not warmup:
    return main
  ramp = optax.linear_schedule(float(opt.warmup_init) * lr, lr, warmup)
  return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(opt, num_train_steps: int) -> tuple[optax.GradientTransformation,
                                                         optax.Schedule]:
  """``(tx, schedule)`` for ``config.optimizer`` (SGD+momentum with L2 as the papers)."""
  schedule = learning_rate_schedule(opt, num_train_steps)
  parts = []
  if opt.grad_clip:
    parts.append(optax.clip_by_global_norm(float(opt.grad_clip)))
  if opt.name == 'sgd':
    if opt.weight_decay:
      parts.append(optax.add_decayed_weights(float(opt.weight_decay)))
    parts.append(optax.sgd(schedule, momentum=float(opt.momentum) or None,
                           nesterov=bool(opt.nesterov)))
  elif opt.name == 'adam':
    if opt.weight_decay:
      parts.append(optax.add_decayed_weights(float(opt.weight_decay)))
    parts.append(optax.adam(schedule))
  elif opt.name == 'adamw':
    parts.append(optax.adamw(schedule, weight_decay=float(opt.weight_decay)))
  else:
    raise ValueError(f'config.optimizer.name: unknown {opt.name!r}')
  return optax.chain(*parts), schedule
