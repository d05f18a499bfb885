"""jepa/models/backward_cut.py: the identity whose gradient XLA must materialise (the CPU fusion fix)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jepa.errors import ConfigError
from jepa.models import backward_cut
from jepa.models import vit as vit_lib


def _grads(model, loss_fn, *args):
  graph, state = nnx.split(model)
  return jax.jit(jax.grad(lambda s: loss_fn(nnx.merge(graph, s), *args)))(state)


def _assert_same_tree(a, b, **tol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


def test_identity_forward_and_gradient_including_nan():
  x = jnp.arange(6.0).reshape(2, 3)
  np.testing.assert_array_equal(backward_cut.materialise_cotangent(x), x)
  g = jax.grad(lambda x: jnp.sum(backward_cut.materialise_cotangent(x) * x))(x)
  np.testing.assert_array_equal(g, 2 * x)  # d/dx sum(x * x), through the cut on one factor.
  # A NaN cotangent stays NaN (the branch taken when the first element is NaN must not hide it).
  g = jax.grad(lambda x: jnp.sum(backward_cut.materialise_cotangent(x) * jnp.nan))(x)
  assert np.isnan(np.asarray(g)).all()


def test_the_cut_is_a_conditional_in_the_compiled_backward_only():
  f = lambda x: jnp.sum(jnp.tanh(backward_cut.materialise_cotangent(x)) ** 2)  # noqa: E731
  x = jnp.ones((4, 8))
  # " conditional(" is the HLO instruction (the bare word also names this test in the HLO's stack frames).
  assert " conditional(" in jax.jit(jax.grad(f)).lower(x).compile().as_text()
  assert " conditional(" not in jax.jit(f).lower(x).compile().as_text()


def test_vit_gradients_do_not_change_with_the_cut():
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
  idx = jnp.tile(jnp.array([[0, 3, 5, 9, 12, 15]]), (4, 1))
  loss = lambda m, x: jnp.mean(m(x, idx=idx) ** 2)  # noqa: E731
  make = lambda cut: vit_lib.ViT(image_size=16, patch_size=4, width=32, depth=3, heads=2,  # noqa: E731
                                 backward_cut=cut, rngs=nnx.Rngs(0))
  _assert_same_tree(_grads(make(True), loss, x), _grads(make(False), loss, x), rtol=1e-5, atol=1e-7)


def test_setting():
  assert backward_cut.setting("on") and not backward_cut.setting("off")
  assert backward_cut.setting("auto") == (jax.default_backend() == "cpu")
  with pytest.raises(ConfigError, match="model.backward_cut='yes' is unknown"):
    backward_cut.setting("yes")
