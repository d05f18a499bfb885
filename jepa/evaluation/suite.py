"""One evaluation of a train state: features extracted once, then every evaluator of `eval.evaluators`.

The loop calls it at `eval.every` and at the end, jepa.evaluate on a restored checkpoint. The trained state
and, side by side, a random init of the same model (`eval.random_baseline`) are scored with the same
evaluators (jepa/evaluation/evaluators.py) and the method's own (`Method.extra_evaluations`: IWM's MRR, the
world model's planning success).
"""
import time

from jepa import features as features_lib
from jepa.data import sources
from jepa.evaluation import evaluators as evaluators_lib


def evaluate(config, state_def, states, train_source, eval_source, *, names, feature_fn, seconds=None):
  """{result: {state name: value}} for `states` ({'trained': state, 'random_init': ...}).

  Args:
    config: the run's config (eval.*).
    state_def: the states' jepa.train_state.StateDef (model graph, mesh).
    states: {name: train state}.
    train_source: the probes' training examples (a fixed subset of eval.max_train_examples).
    eval_source: the held-out examples (eval.max_eval_examples of them).
    names: evaluator names (`evaluators.resolve`).
    feature_fn: fn(model, teacher, images) -> the features the evaluators see.
    seconds: a dict that collects each evaluator's wall time, summed over calls (for the report).
  """
  cfg, method = config.eval, state_def.method
  apply = features_lib.apply_fn(state_def, feature_fn)
  extract_kw = dict(example_fn=method.example_fn(train=False), batch_size=cfg.batch_size)
  results = {}
  for name, state in states.items():
    mesh = state_def.mesh
    xt, yt = features_lib.extract(apply, state, train_source, mesh, max_examples=cfg.max_train_examples,
                                  **extract_kw)
    xe, ye = features_lib.extract(apply, state, eval_source, mesh, max_examples=cfg.max_eval_examples,
                                  **extract_kw)

    def lidar_views(state=state):
      """Features [n, q, ...] of q views (Method.view_fn) of n fixed eval images (see evaluators.py)."""
      images = sources.fixed_subset(eval_source, cfg.lidar.samples)
      feats, _ = features_lib.extract(apply, state, evaluators_lib.RepeatedSource(images, cfg.lidar.views),
                                      mesh, example_fn=method.view_fn(), batch_size=cfg.batch_size)
      return feats.reshape(len(images), cfg.lidar.views, *feats.shape[1:])

    data = evaluators_lib.EvalData(config, xt, yt, xe, ye, train_source.num_classes, views=lidar_views)
    for evaluator in names:
      t0 = time.perf_counter()
      for key, value in evaluators_lib.REGISTRY[evaluator](data).items():
        results.setdefault(key, {})[name] = value
      if seconds is not None:
        seconds[evaluator] = seconds.get(evaluator, 0.0) + time.perf_counter() - t0
    # The method's own evaluators, beside the probes and in the same layout.
    for key, value in method.extra_evaluations(state, state_def.models, state_def.mesh).items():
      results.setdefault(key, {})[name] = value
  return results


def flat(results):
  """{'linear/trained': value, ...}: the layout of metrics.jsonl's probe/ rows."""
  return {f"{kind}/{name}": value for kind, values in results.items() for name, value in values.items()}
