r"""Evaluators that `eval.evaluators` can name, run by jepa/evaluation/suite.py on frozen features.

`eval.evaluators` is a comma-separated list; `probes` stands for the method's own `Method.probes` (I-JEPA,
IWM, LeJEPA: 'linear'; V-JEPA: 'attentive'). Each evaluator gets the same extracted features (`EvalData`) and
returns {result name: value}; suite.evaluate runs them for the trained state and a random init side by side.

  linear     logistic regression on average-pooled features, l2 picked on a hold-out of the training
             features (linear_probe.py)                                              -> linear
  attentive  attentive classifier on all tokens (attentive_probe.py)                -> attentive
  knn        cosine kNN, `eval.knn.k` neighbours, DINO's temperature-weighted vote or a plain majority
             (knn.py)                                                               -> knn
  few_shot   the linear probe with a fixed l2 on s labels per class, s in `eval.few_shot.shots` (0 = all),
             mean over `eval.few_shot.trials` fixed-seed subsets (few_shot.py)
                                                                  -> few_shot_1, few_shot_10, few_shot_all
  rankme     RankMe of the pooled eval features [N, F] (collapse.py)                -> rankme
  lidar      LiDAR of `eval.lidar.views` views of `eval.lidar.samples` eval images (collapse.py) -> lidar

LiDAR's views (what is honest to measure): surrogate class i is one held-out image, its q members are q views
of it drawn by the method's own training augmentation (`Method.view_fn`: I-JEPA / V-JEPA a random resized
crop (and flip) of the image or clip, IWM the target view's crop, flip and colour jitter, LeJEPA a global
crop with its photometric augmentations), encoded by the method's probe features without any mask. The views
come from a generator keyed on (image, view), so every evaluation, and the trained and random encoders, see
the same n x q images. The LiDAR paper uses n = 1000 and q = 50 on ImageNet; the defaults (128 x 4) are sized
for a CPU run, and the score is at most min(F, n - 1).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from jepa.errors import ConfigError
from jepa.evaluation import attentive_probe
from jepa.evaluation import collapse
from jepa.evaluation import few_shot as few_shot_lib
from jepa.evaluation import knn as knn_lib
from jepa.evaluation import linear_probe

# One compiled program each (run eagerly, every operation would compile on its own: seconds on a CPU).
_rankme = jax.jit(collapse.rankme)
_lidar = jax.jit(collapse.lidar)


@dataclasses.dataclass
class EvalData:
  """Frozen features of one state: train / eval features [N, F] or tokens [N, T, D], labels, and LiDAR views.

  `views()` returns the features of the LiDAR views [n, q, F or T x D], computed on first call.
  """
  config: Any
  train_x: np.ndarray
  train_y: np.ndarray
  eval_x: np.ndarray
  eval_y: np.ndarray
  num_classes: int
  views: Callable[[], np.ndarray] | None = None


def pool(x):
  """Tokens [N, T, D] -> average-pooled [N, D]; pooled features pass through."""
  return x.mean(axis=1) if x.ndim == 3 else x


def linear(d: EvalData):
  acc = linear_probe.linear_probe(pool(d.train_x), d.train_y, pool(d.eval_x), d.eval_y, d.num_classes)
  return {"linear": acc["accuracy"]}


def attentive(d: EvalData):
  if d.train_x.ndim != 3:
    raise ConfigError(f"the attentive probe needs tokens [B, N, D] from method.features, got "
                      f"{d.train_x.shape[1:]}; return tokens or list only the 'linear' probe in the method's "
                      "`probes`")
  a = d.config.eval.attentive
  acc = attentive_probe.attentive_probe(d.train_x, d.train_y, d.eval_x, d.eval_y, d.num_classes,
                                        variant=a.variant, depth=a.depth, heads=a.heads, epochs=a.epochs,
                                        batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
                                        seed=d.config.seed)
  return {"attentive": acc["accuracy"]}


def knn(d: EvalData):
  c = d.config.eval.knn
  return {"knn": knn_lib.knn_accuracy(pool(d.train_x), d.train_y, pool(d.eval_x), d.eval_y, d.num_classes,
                                      k=c.k, temperature=c.temperature, vote=c.vote)}


def few_shot(d: EvalData):
  c = d.config.eval.few_shot
  accs = few_shot_lib.few_shot(pool(d.train_x), d.train_y, pool(d.eval_x), d.eval_y, d.num_classes,
                               shots=tuple(c.shots), trials=c.trials, l2=c.l2, seed=d.config.seed)
  return {f"few_shot_{s or 'all'}": acc for s, acc in accs.items()}


def rankme(d: EvalData):
  return {"rankme": float(_rankme(pool(d.eval_x)))}


def lidar(d: EvalData):
  views = d.views()                                             # [n, q, ...]
  n, q = views.shape[:2]
  flat = pool(views.reshape(n * q, *views.shape[2:]))
  return {"lidar": float(_lidar(flat.reshape(n, q, -1)))}


REGISTRY = {"linear": linear, "attentive": attentive, "knn": knn, "few_shot": few_shot, "rankme": rankme,
            "lidar": lidar}


def resolve(names: str, method_probes) -> list[str]:
  """The evaluators named by `eval.evaluators` (comma-separated), `probes` expanded, duplicates dropped."""
  out = []
  for name in (n.strip() for n in names.split(",")):
    if not name:
      continue
    expanded = list(method_probes) if name == "probes" else [name]
    for e in expanded:
      if e not in REGISTRY:
        raise ConfigError(f"eval.evaluators names {e!r}, which is unknown; use a comma-separated list from "
                          f"{['probes', *REGISTRY]}")
      if e not in out:
        out.append(e)
  return out


class RepeatedSource:
  """Each example of `source` `times` times in a row: item i is source[i // times] (LiDAR's views).

  The eval pipeline keys each item's generator on i, so the copies of one example get different views.
  """

  def __init__(self, source, times):
    self.source = source
    self.times = int(times)
    self.name = f"{source.name} x{times}"
    self.num_classes = source.num_classes

  def __len__(self):
    return len(self.source) * self.times

  def __getitem__(self, index):
    return self.source[int(index) // self.times]
