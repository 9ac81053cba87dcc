"""Tests of robustjax.losses against per-example numpy loops."""

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import losses

LOGITS = jnp.array([[2.0, 1.0, -1.0], [0.5, 3.0, 3.0], [-2.0, 0.0, 4.0], [1.0, 1.0, 1.0]])
LABELS = jnp.array([0, 1, 0, 2], jnp.int32)


def test_cross_entropy_matches_log_softmax_and_is_stable():
  z = np.asarray(LOGITS, np.float64)
  expected = [np.log(np.sum(np.exp(row))) - row[y] for row, y in zip(z, np.asarray(LABELS))]
  np.testing.assert_allclose(losses.cross_entropy(LOGITS, LABELS), expected, rtol=1e-6)
  big = losses.cross_entropy(1e4 * LOGITS, LABELS)
  assert np.all(np.isfinite(big))
  np.testing.assert_allclose(big[0], 0.0, atol=1e-3)  # saturated and correct


def test_best_other_runner_up_and_margin_match_loops():
  for row, y, other, runner, margin in zip(
      np.asarray(LOGITS), np.asarray(LABELS), losses.best_other(LOGITS, LABELS),
      losses.runner_up(LOGITS, LABELS), losses.margin(LOGITS, LABELS)):
    rest = [(row[j], j) for j in range(len(row)) if j != y]
    assert float(other) == max(v for v, _ in rest)
    assert int(runner) != y and row[int(runner)] == max(v for v, _ in rest)
    assert float(margin) == row[y] - max(v for v, _ in rest)
  assert losses.runner_up(LOGITS, LABELS).dtype == jnp.int32
  # negative margin <=> some other class scores strictly higher
  wrong = np.asarray(losses.margin(LOGITS, LABELS)) < 0
  np.testing.assert_array_equal(wrong, [False, False, True, False])


def test_cross_entropy_loss_fn_bridges_a_logits_fn():
  w = jnp.arange(6.0).reshape(2, 3) / 6.0
  logits_fn = lambda params, x: x @ params
  loss_fn = losses.cross_entropy_loss_fn(logits_fn)
  x = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.1, 0.2]])
  np.testing.assert_allclose(loss_fn(w, x, LABELS),
                             losses.cross_entropy(x @ w, LABELS), rtol=1e-6)
  assert jax.jit(loss_fn)(w, x, LABELS).shape == (4,)
