r"""Few-shot linear probes: the logistic-regression probe of linear_probe.py fitted on s labels per class.

For each shot count s (0 = all labels) and trial t = 0 .. trials-1, the subset keeps, for every class c,
min(s, n_c) training examples drawn by a generator seeded with (seed, s, t), so the subsets are the same for
every evaluation of a run and for the trained and the random-init encoder. The probe

  minimise  mean_{i in subset} CE(W x_i + b, y_i) + l2 * ||W||^2

is fitted with a fixed l2 (there is nothing to hold out from one example per class, so no selection) on
features standardised with the mean and standard deviation of *all* training features (no labels involved),
and scored on the whole eval split; the result is the mean accuracy over the trials. With s = 0 there is one
trial (the subset is everything), which differs from the `linear` probe only by the fixed l2.

Compilation: an L-BFGS fit compiles for seconds on a CPU, so every subset of s > 0 shots is padded with
zero-weight rows to the size of the largest such subset (one compilation for all of them), and s = 0 has the
shape of the linear probe's final refit on all training features (compiled already when both run).
"""
import numpy as np

from jepa.evaluation import linear_probe


def subset(labels, shots, *, seed, trial):
  """Sorted indices of `shots` examples per class (all of a class with fewer; all if shots == 0)."""
  labels = np.asarray(labels)
  if shots == 0:
    return np.arange(len(labels))
  rng = np.random.default_rng([seed, shots, trial])
  keep = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    keep.append(rng.choice(members, size=min(shots, len(members)), replace=False))
  return np.sort(np.concatenate(keep))


def few_shot(train_x, train_y, eval_x, eval_y, num_classes, *, shots=(1, 10, 0), trials=3, l2=1e-3, seed=0,
             steps=linear_probe.STEPS):
  """{shots: mean eval accuracy over the trials} (see the module docstring)."""
  norm = linear_probe.standardiser(train_x)
  xt, xe = np.asarray(norm(train_x)), norm(eval_x)
  train_y = np.asarray(train_y, np.int32)
  subsets = {int(s): [subset(train_y, s, seed=seed, trial=t) for t in range(1 if s == 0 else trials)]
             for s in shots}
  rows = max([len(i) for s, v in subsets.items() if s for i in v], default=0)
  out = {}
  for s, trial_subsets in subsets.items():
    accs = []
    for idx in trial_subsets:
      if s == 0 or len(idx) == rows:
        x, y, w = xt[idx], train_y[idx], None
      else:  # Zero-weight padding rows (copies of the first kept row) keep the compiled shape.
        pad = np.full(rows - len(idx), idx[0])
        x, y = xt[np.concatenate([idx, pad])], train_y[np.concatenate([idx, pad])]
        w = np.concatenate([np.ones(len(idx)), np.zeros(len(pad))]).astype(np.float32)
      accs.append(linear_probe.fit_and_score(x, y, xe, eval_y, num_classes, l2=l2, steps=steps, weights=w))
    out[s] = float(np.mean(accs))
  return out
