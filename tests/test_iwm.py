"""IWM: views and action vector, conditioned predictor, MRR, one compilation, 1 vs 8 devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jepa import train
from jepa.data import iwm_views
from jepa.evaluation import mrr
from jepa.methods import get_method
from tests.helpers import load_config


def _config(**iwm):
  c = load_config("iwm_vit", "tiny")
  c.eval.probe = False
  c.iwm.update(iwm)
  return c


# --- views and actions --------------------------------------------------------------------------------------
def test_action_vector_from_known_jitter():
  jitter = iwm_views.Jitter()  # 0.4 / 0.4 / 0.2 / 0.1: ranges 0.8, 0.8, 0.4, 0.2.
  target = {"brightness": 1.2, "contrast": 0.8, "saturation": 1.1, "hue": 0.05, "applied": True}
  source = {"brightness": 0.7, "contrast": 1.3, "saturation": 0.9, "hue": -0.1, "applied": False}  # identity
  a = iwm_views.action_vector(target, source, blur=True, grayscale=False, solarize=True, jitter=jitter)
  np.testing.assert_allclose(a, [0.2 / 0.8, -0.2 / 0.8, 0.1 / 0.4, 0.05 / 0.2, 1, 0, 1], rtol=1e-6)
  # Both applied: the difference of the factors; a view against itself is the null action.
  source["applied"] = True
  a = iwm_views.action_vector(target, source, blur=False, grayscale=True, solarize=False, jitter=jitter)
  np.testing.assert_allclose(a, [0.5 / 0.8, -0.5 / 0.8, 0.2 / 0.4, 0.15 / 0.2, 0, 1, 0], rtol=1e-6)
  null = iwm_views.action_vector(target, target, blur=False, grayscale=False, solarize=False, jitter=jitter)
  np.testing.assert_array_equal(null, np.zeros(iwm_views.ACTION_DIM))
  assert iwm_views.Jitter(brightness=0.0).ranges[0] == 1.0  # no division by zero


def _views(**kw):
  method = get_method(_config())
  args = dict(image_size=16, mask=method.mask(), crop_scale=(0.3, 1.0))
  args.update(kw)
  return iwm_views.IWMViews(**args)


def test_views_deterministic_and_shared_geometry():
  image = np.random.default_rng(0).uniform(0, 1, (12, 12, 1)).astype(np.float32)
  views = _views()
  a = views({"image": image, "label": 3}, np.random.default_rng([7, 1]))
  b = views({"image": image, "label": 3}, np.random.default_rng([7, 1]))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  c = views({"image": image, "label": 3}, np.random.default_rng([7, 2]))
  assert not np.array_equal(a["image"], c["image"])
  m = views.mask
  assert a["context_idx"].shape == (m.num_context,) and a["target_idx"].shape == (1, m.num_target)
  assert a["action"].shape == (iwm_views.ACTION_DIM,) and np.all(np.abs(a["action"]) <= 1)
  # Context and targets never overlap (the context is the complement of the union of the blocks).
  ctx = set(a["context_idx"][a["context_valid"]])
  assert not ctx & set(a["target_idx"][a["target_valid"]])
  # No jitter and no destructive op: both views are the same shared crop, and the action is null.
  plain = _views(jitter=iwm_views.Jitter(p=0.0), blur_p=0.0, grayscale_p=0.0, solarize_p=0.0)
  v = plain.views(image, np.random.default_rng(3))
  np.testing.assert_array_equal(v["target"], v["source"])
  np.testing.assert_array_equal(v["action"], np.zeros(iwm_views.ACTION_DIM))


# --- conditioned predictor ----------------------------------------------------------------------------------
@pytest.mark.parametrize("conditioning", ["feature", "sequence", "none"])
def test_predictor_depends_on_action_iff_conditioned(conditioning):
  c = _config(conditioning=conditioning)
  method = get_method(c)
  model = method.init_model(nnx.Rngs(0))
  ex = method.example_fn(train=True)({"image": np.zeros((8, 8, 1), np.float32), "label": 0},
                                     np.random.default_rng(0))
  batch = {k: jnp.asarray(v)[None] for k, v in ex.items()}
  x = jax.random.normal(jax.random.key(1), batch["source"].shape)

  @jax.jit
  def run(action):
    return method.predict(model, x, batch["context_idx"], batch["context_valid"], batch["target_idx"],
                          batch["target_valid"], action)[0]

  a = jnp.zeros((1, iwm_views.ACTION_DIM))
  out, other = run(a), run(a.at[:, 0].set(1.0).at[:, 5].set(1.0))
  assert out.shape == (1, 1, method.mask().num_target, 32)
  if conditioning == "none":
    np.testing.assert_array_equal(out, other)
  else:
    assert float(jnp.abs(out - other).max()) > 1e-4


# --- MRR ----------------------------------------------------------------------------------------------------
def test_mrr_closed_forms():
  n, k, d = 8, 3, 4
  line = jnp.arange(n, dtype=jnp.float32)[:, None, None] * jnp.ones((1, k, d))  # t_j = j * 1: distances j^2
  # Perfect predictions rank first: MRR = 1.
  assert mrr.mean_reciprocal_rank(line, line) == pytest.approx(1.0)
  # An invariant predictor (p_j = t_0 for every j): rank_j = j + 1, so MRR = H_N / N.
  harmonic = sum(1.0 / (j + 1) for j in range(n))
  np.testing.assert_allclose(mrr.reciprocal_ranks(jnp.zeros_like(line), line), 1.0 / np.arange(1, n + 1))
  assert mrr.mean_reciprocal_rank(jnp.zeros_like(line), line) == pytest.approx(harmonic / n)
  # Collapse (all distances tie) counts against the right version: MRR = 1 / N.
  assert mrr.mean_reciprocal_rank(jnp.ones((2, n, k, d)), jnp.ones((2, n, k, d))) == pytest.approx(1.0 / n)
  # Invalid positions are ignored: garbage there changes nothing.
  valid = jnp.asarray([True, False, True])
  noisy = line.at[:, 1].set(jax.random.normal(jax.random.key(0), (n, d)) * 100)
  assert mrr.mean_reciprocal_rank(noisy, line, valid) == pytest.approx(1.0)
  # The expanded distance matches the direct one.
  p, t = jax.random.normal(jax.random.key(1), (2, 2, n, k, d))
  direct = (((p[:, :, None] - t[:, None]) ** 2) * valid[:, None]).sum((-1, -2)) / (valid.sum() * d)
  np.testing.assert_allclose(mrr.pairwise_distances(p, t, jnp.broadcast_to(valid, (2, k))), direct, rtol=1e-5,
                             atol=1e-5)


def test_mrr_evaluator_of_an_unconditioned_model_is_harmonic(tmp_path):
  # Without conditioning every action gets the same prediction, so the ranks are a permutation of 1..N and the
  # evaluator must return exactly H_N / N, whatever the weights.
  c = _config(conditioning="none", mrr_bank_size=4, mrr_images=8, mrr_batch_size=4)
  run = train.setup(c, str(tmp_path), verbose=False)
  score = run.method.extra_evaluations(run.state_def.init(0), run.state_def.models, run.mesh)
  assert score["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4, abs=1e-6)


# --- training -----------------------------------------------------------------------------------------------
def test_compiles_once(tmp_path):
  c = _config()
  c.train.update(num_steps=5, checkpoint_every=0)
  run = train.setup(c, str(tmp_path), verbose=False)
  _, out = train.fit(run)
  assert out["step"] == 5 and out["skipped_steps"] == 0
  assert run.train_step._cache_size() == 1  # pylint: disable=protected-access
