"""Tiny models shared by the attack tests: plain jnp functions of tuple params.

``linear((w [D, K], b [K]), x [B, ...]) -> [B, K]`` has closed-form worst cases;
``mlp(((w1, b1), (w2, b2)), x)`` is a smooth one-hidden-layer tanh network.
"""

import jax.numpy as jnp


def linear(params, x):
  w, b = params
  return jnp.reshape(x, (x.shape[0], -1)) @ w + b


def mlp(params, x):
  (w1, b1), (w2, b2) = params
  h = jnp.tanh(jnp.reshape(x, (x.shape[0], -1)) @ w1 + b1)
  return h @ w2 + b2
