"""kNN, few-shot probes and the evaluator registry, against brute-force NumPy references and constructed
data."""
import numpy as np
import pytest

from jepa.errors import ConfigError
from jepa.evaluation import evaluators
from jepa.evaluation import few_shot
from jepa.evaluation import knn
from jepa.evaluation import linear_probe


def _brute_force_knn(train_x, train_y, eval_x, num_classes, k, temperature, vote):
  """One query at a time, float64: cosine similarities, the k largest, the vote, the first best class."""
  t = np.asarray(train_x, np.float64)
  t = t / np.linalg.norm(t, axis=1, keepdims=True)
  preds = []
  for x in np.asarray(eval_x, np.float64):
    sims = t @ (x / np.linalg.norm(x))
    order = sorted(range(len(t)), key=lambda i: -sims[i])[:min(k, len(t))]
    scores = [0.0] * num_classes
    for i in order:
      scores[train_y[i]] += np.exp(sims[i] / temperature) if vote == "weighted" else 1.0
    preds.append(max(range(num_classes), key=lambda c: (scores[c], -c)))  # ties: the smallest class
  return np.asarray(preds)


@pytest.mark.parametrize("vote,k,temperature", [("weighted", 5, 0.07), ("weighted", 20, 0.5),
                                                ("majority", 7, 0.07), ("majority", 4, 1.0)])
def test_knn_matches_brute_force(vote, k, temperature):
  rng = np.random.default_rng(k)
  centres = rng.standard_normal((4, 6))
  train_y = rng.integers(0, 4, 90)
  train_x = centres[train_y] + 0.9 * rng.standard_normal((90, 6))
  eval_y = rng.integers(0, 4, 37)
  eval_x = centres[eval_y] + 0.9 * rng.standard_normal((37, 6))
  ref = _brute_force_knn(train_x, train_y, eval_x, 4, k, temperature, vote)
  got = knn.knn_predict(train_x, train_y, eval_x, 4, k=k, temperature=temperature, vote=vote, chunk_size=8)
  np.testing.assert_array_equal(got, ref)
  # Scale does not matter (cosine), nor the chunking.
  got2 = knn.knn_predict(3.0 * train_x, train_y, 0.1 * eval_x, 4, k=k, temperature=temperature, vote=vote)
  np.testing.assert_array_equal(got2, ref)
  acc = knn.knn_accuracy(train_x, train_y, eval_x, eval_y, 4, k=k, temperature=temperature, vote=vote)
  assert acc == pytest.approx(np.mean(ref == eval_y))


def test_knn_limits():
  rng = np.random.default_rng(0)
  train_x, train_y = rng.standard_normal((30, 5)), rng.integers(0, 3, 30)
  eval_x = rng.standard_normal((12, 5))
  # k above the train size is capped at it.
  np.testing.assert_array_equal(knn.knn_predict(train_x, train_y, eval_x, 3, k=500, vote="majority"),
                                _brute_force_knn(train_x, train_y, eval_x, 3, 30, 1.0, "majority"))
  # A tiny temperature is the 1-nearest-neighbour rule.
  cos = (eval_x / np.linalg.norm(eval_x, axis=1, keepdims=True)) @ (
      train_x / np.linalg.norm(train_x, axis=1, keepdims=True)).T
  np.testing.assert_array_equal(knn.knn_predict(train_x, train_y, eval_x, 3, k=10, temperature=1e-3),
                                train_y[np.argmax(cos, axis=1)])
  with pytest.raises(ValueError, match="vote"):
    knn.knn_predict(train_x, train_y, eval_x, 3, vote="soft")


def test_few_shot_subsets():
  labels = np.array([0] * 12 + [1] * 3 + [2] * 20)
  for shots in (1, 5, 10):
    idx = few_shot.subset(labels, shots, seed=3, trial=0)
    counts = np.bincount(labels[idx], minlength=3)
    np.testing.assert_array_equal(counts, [min(shots, 12), min(shots, 3), min(shots, 20)])
    assert len(set(idx.tolist())) == len(idx)
    np.testing.assert_array_equal(idx, few_shot.subset(labels, shots, seed=3, trial=0))  # fixed seed
  assert not np.array_equal(few_shot.subset(labels, 5, seed=3, trial=0), few_shot.subset(labels, 5, seed=3,
                                                                                          trial=1))
  np.testing.assert_array_equal(few_shot.subset(labels, 0, seed=3, trial=0), np.arange(len(labels)))


def test_zero_weight_rows_do_not_change_the_fit():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((20, 4)).astype(np.float32)
  y = rng.integers(0, 3, 20)
  pad_x = np.concatenate([x, 50 * rng.standard_normal((13, 4)).astype(np.float32)])
  pad_y = np.concatenate([y, rng.integers(0, 3, 13)])
  w = np.concatenate([np.ones(20), np.zeros(13)]).astype(np.float32)
  # pylint: disable=protected-access
  a = linear_probe._fit(x, y, 1e-3, num_classes=3, steps=100)
  b = linear_probe._fit(pad_x, pad_y, 1e-3, num_classes=3, steps=100, weights=w)
  np.testing.assert_allclose(np.asarray(a["w"]), np.asarray(b["w"]), atol=1e-4)


def test_few_shot_separable_and_shot_keys():
  rng = np.random.default_rng(2)
  centres = 6.0 * np.eye(5)
  yt, ye = rng.integers(0, 5, 200), rng.integers(0, 5, 60)
  xt, xe = centres[yt] + 0.3 * rng.standard_normal((200, 5)), centres[ye] + 0.3 * rng.standard_normal((60, 5))
  out = few_shot.few_shot(xt, yt, xe, ye, 5, shots=(1, 10, 0), trials=2)
  assert set(out) == {1, 10, 0} and all(v == 1.0 for v in out.values())


def _data(config, xt, yt, xe, ye, views=None):
  return evaluators.EvalData(config, xt, yt, xe, ye, int(max(yt.max(), ye.max())) + 1, views=views)


def test_evaluators_resolve_and_values():
  from tests.helpers import load_config  # pylint: disable=import-outside-toplevel
  assert evaluators.resolve("probes,knn, few_shot,knn", ("attentive",)) == ["attentive", "knn", "few_shot"]
  with pytest.raises(ConfigError, match="eval.evaluators names 'knnn'"):
    evaluators.resolve("probes,knnn", ("linear",))
  config = load_config("ijepa_vit", "tiny")
  rng = np.random.default_rng(4)
  # Tokens [N, T, D] are average-pooled: constant tokens pool to the features themselves.
  yt, ye = rng.integers(0, 3, 40), rng.integers(0, 3, 15)
  ft, fe = rng.standard_normal((40, 6)), rng.standard_normal((15, 6))
  d = _data(config, np.repeat(ft[:, None], 3, 1), yt, np.repeat(fe[:, None], 3, 1), ye)
  assert evaluators.knn(d)["knn"] == pytest.approx(
      np.mean(_brute_force_knn(ft, yt, fe, 3, 20, 0.07, "weighted") == ye))
  assert set(evaluators.few_shot(d)) == {"few_shot_1", "few_shot_10", "few_shot_all"}
  # RankMe of eval features with singular values (3, 1): exp(H(3/4, 1/4)) = 4 / 3^(3/4).
  u, _ = np.linalg.qr(rng.standard_normal((15, 2)))
  v, _ = np.linalg.qr(rng.standard_normal((6, 2)))
  d = _data(config, ft, yt, (u * [3.0, 1.0]) @ v.T, ye)
  assert evaluators.rankme(d)["rankme"] == pytest.approx(4 / 3**0.75, rel=1e-4)


def test_lidar_evaluator_closed_form():
  """8 samples x 2 views with S_b = c I_2 (on 2 of 4 dims) and S_w isotropic: LiDAR = 2 exactly."""
  h = np.array([[1, 1], [1, -1]])
  hadamard = np.kron(np.kron(h, h), h).astype(np.float64)
  means = np.zeros((8, 4))
  means[:, :2] = hadamard[:, 1:3]
  e = 0.5 * np.eye(4)[np.arange(8) % 4]
  views = np.stack([means + e, means - e], axis=1)                 # [n=8, q=2, 4]
  tokens = np.repeat(views[:, :, None, :], 5, axis=2)              # [8, 2, T=5, 4]: pools back to views
  calls = []
  d = evaluators.EvalData(None, None, None, None, None, 8, views=lambda: calls.append(1) or tokens)
  assert evaluators.lidar(d)["lidar"] == pytest.approx(2.0, rel=1e-4)
  assert calls == [1]


def test_repeated_source_order():
  class Source:
    name, num_classes = "s", 2

    def __len__(self):
      return 3

    def __getitem__(self, i):
      return {"i": i}

  rep = evaluators.RepeatedSource(Source(), 4)
  assert len(rep) == 12 and [rep[j]["i"] for j in range(12)] == [0] * 4 + [1] * 4 + [2] * 4


def test_linear_probe_reaches_the_optimum_of_an_independent_solver():
  """The L-BFGS fit runs to convergence: its objective equals SciPy's optimum of the same problem."""
  from scipy import optimize  # pylint: disable=import-outside-toplevel  (scikit-learn brings SciPy)
  rng = np.random.default_rng(4)
  n, d, c, l2 = 400, 12, 5, 1e-4
  x = rng.standard_normal((n, d))
  y = np.argmax(x[:, :c] + 0.8 * rng.standard_normal((n, c)), axis=1)

  def objective(flat):  # NumPy: mean cross-entropy + l2 ||W||^2, and its gradient.
    w, b = flat[:d * c].reshape(d, c), flat[d * c:]
    logits = x @ w + b
    logits = logits - logits.max(1, keepdims=True)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(n), y])) + l2 * np.sum(w ** 2)
    g = (p - np.eye(c)[y]) / n
    return loss, np.concatenate([(x.T @ g + 2 * l2 * w).ravel(), g.sum(0)])

  best = optimize.minimize(objective, np.zeros(d * c + c), jac=True, method="L-BFGS-B",
                           options={"gtol": 1e-10, "ftol": 1e-14, "maxiter": 5000})
  params = linear_probe._fit(x.astype(np.float32), y, 1e-4, num_classes=c)  # pylint: disable=protected-access
  ours, _ = objective(np.concatenate([np.asarray(params["w"]).ravel(), np.asarray(params["b"])]))
  assert abs(ours - best.fun) < 1e-5, (ours, best.fun)
  np.testing.assert_allclose(np.asarray(params["w"]), best.x[:d * c].reshape(d, c), atol=2e-3)
