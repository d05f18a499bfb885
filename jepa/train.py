"""The one training loop, for every method.

config → distributed init → mesh → data iterator (this process's shard) → abstract init → shardings →
sharded init → jitted train step (donated state, compiled once) → restore the latest checkpoint if any →
loop: step, log (with the collapse alarm), periodic eval, periodic checkpoint, preemption → final checkpoint →
evaluators (probes, kNN, few-shot, RankMe, LiDAR, the method's own) → pictures and report.md.

The train state is a plain pytree of arrays, so it shards, donates and checkpoints without special cases:
  step            int32, the number of updates done
  params          the trained model's nnx.Param values (nested dict)
  model_state     its other variables (e.g. BatchNorm statistics)
  ema             the EMA target's parameters (a copy of params[method.ema_target]), or {} without a teacher
  opt_state       optax state
  skipped         number of updates skipped because the loss or gradient was not finite
  first_bad_step  the first such step, or -1
Randomness: the step's key is fold_in(key(seed), step), so a resumed run draws exactly what an uninterrupted
one would; the data iterator's position is checkpointed with the state.
"""
import collections
import functools
import json
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from jepa import checkpoint as checkpoint_lib
from jepa import config as config_lib
from jepa import metrics as metrics_lib
from jepa import optim
from jepa import parallel
from jepa import run_config
from jepa.data import pipeline
from jepa.data import sources
from jepa.errors import ConfigError, JepaError
from jepa.evaluation import evaluators as evaluators_lib
from jepa.methods import get_method


class TrainingStopped(JepaError):
  """The run stopped on purpose (non-finite loss with nan_policy='stop')."""


def _preemption_service_active():
  """Whether JAX's multi-host preemption sync service runs (it then owns SIGTERM; see Checkpointer)."""
  try:
    from jax._src import distributed  # pylint: disable=import-outside-toplevel  (no public accessor)
  except ImportError:
    return False
  state = distributed.global_state
  return (getattr(state, "client", None) is not None
          and getattr(state, "preemption_sync_manager", None) is not None)


# Probes a method can list in `Method.probes` (evaluators of jepa/evaluation/evaluators.py).
PROBES = ("linear", "attentive")


def _flat(probes):
  return {f"{kind}/{name}": acc for kind, accs in probes.items() for name, acc in accs.items()}


class Trainer:
  """Builds everything a run needs from the config; `run()` trains, `evaluate()` probes."""

  def __init__(self, config, workdir, *, verbose=True, devices=None):
    """`devices` (default: all of jax.devices()) may be another platform's, e.g. a TPU topology's devices
    for ahead-of-time compilation on a CPU machine (experiments/aot.py); such a Trainer lowers, never runs."""
    config = config_lib.with_defaults(config)  # A config.json from before a key existed gets its default.
    self.config = config
    self.workdir = workdir
    if devices is None:
      parallel.maybe_initialize_distributed(config.distributed)
    devices = jax.devices() if devices is None else list(devices)
    self.is_main = jax.process_index() == 0
    self.verbose = verbose and self.is_main
    self.num_devices = len(devices)
    config_lib.validate(config, num_devices=len(devices), process_count=jax.process_count())
    self.method = get_method(config)
    self.method.validate()
    evaluators_lib.resolve(config.eval.evaluators, self.method.probes)  # An unknown name fails here.
    self.eval_seconds = {}  # Wall time per evaluator, summed over evaluations (for the report).
    self.mesh = parallel.make_mesh(config.mesh, devices)
    self.batch_sharding = parallel.batch_sharding(self.mesh)
    self.num_steps = config.train.num_steps

    # Data first: a missing dataset fails before anything compiles.
    self.train_source = sources.get_source(config.data, "train")
    self.local_batch = config.train.batch_size // jax.process_count()

    # Model graph and abstract state; then shardings and a sharded init.
    self.lr_fn, self.wd_fn, self.momentum_fn = self.method.schedules(self.num_steps)
    self.tx = optim.make_optimizer(config.optim, self.lr_fn, self.wd_fn)
    abstract_model = nnx.eval_shape(lambda: self.method.init_model(nnx.Rngs(config.seed)))
    self.graphdef, _, _ = nnx.split(abstract_model, nnx.Param, ...)
    ema_name = self.method.ema_target
    self.target_graphdef = nnx.split(getattr(abstract_model, ema_name), nnx.Param, ...)[0] if ema_name else None
    abstract_state = jax.eval_shape(functools.partial(self._init_state, config.seed))
    self.state_shardings = self._shardings(abstract_state)
    self.abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                       abstract_state, self.state_shardings)
    self._init = jax.jit(self._init_state, static_argnums=0, out_shardings=self.state_shardings)
    self.train_step = jax.jit(self._train_step, in_shardings=(self.state_shardings, self.batch_sharding),
                              out_shardings=(self.state_shardings, parallel.replicated(self.mesh)),
                              donate_argnums=0)
    self._applied = {}  # jitted fn(state, images) per feature function (see `extract`)

  # --- state --------------------------------------------------------------------------------------------------
  def _init_state(self, seed):
    model = self.method.init_model(nnx.Rngs(seed))
    _, params, model_state = nnx.split(model, nnx.Param, ...)
    params, model_state = params.to_pure_dict(), model_state.to_pure_dict()
    ema_name = self.method.ema_target
    ema = jax.tree.map(jnp.copy, params[ema_name]) if ema_name else {}
    return {"step": jnp.zeros([], jnp.int32), "params": params, "model_state": model_state, "ema": ema,
            "opt_state": self.tx.init(params), "skipped": jnp.zeros([], jnp.int32),
            "first_bad_step": jnp.full([], -1, jnp.int32)}

  def _shardings(self, abstract_state):
    min_size = self.config.mesh.fsdp_min_size
    params_sh = parallel.tree_shardings(self.mesh, abstract_state["params"], min_size)
    shardings = jax.tree.map(lambda _: parallel.replicated(self.mesh), abstract_state)
    shardings["params"] = params_sh
    shardings["model_state"] = parallel.tree_shardings(self.mesh, abstract_state["model_state"], min_size)
    # The EMA target shares the student's shardings (taken from them, not re-derived, so it cannot drift if
    # the rule changes); the optimizer moments have the parameters' shapes, so the same rule shards them alike.
    ema_name = self.method.ema_target
    shardings["ema"] = params_sh[ema_name] if ema_name else {}
    shardings["opt_state"] = parallel.tree_shardings(self.mesh, abstract_state["opt_state"], min_size)
    return shardings

  def _target(self, state):
    if self.target_graphdef is None:
      return None
    rest = state["model_state"].get(self.method.ema_target, {})
    return nnx.merge(self.target_graphdef, state["ema"], rest)

  def eval_models(self, state):
    """(model, EMA target or None) rebuilt from `state` in eval mode, for evaluators to call inside jit."""
    model = nnx.merge(self.graphdef, state["params"], state["model_state"])
    model.eval()
    target = self._target(state)
    if target is not None:
      target.eval()
    return model, target

  # --- the step -----------------------------------------------------------------------------------------------
  def _grads(self, state, model_state, batch, rng):
    """(loss, metrics, updated model_state, gradients w.r.t. state['params']) of one (micro-)batch."""

    def loss_fn(params):
      # The EMA target is rebuilt here, in the trace that calls it: an NNX module built outside value_and_grad
      # cannot be called through nnx.remat inside it (model.remat=True would raise TraceContextError).
      target = self._target(state)
      model = nnx.merge(self.graphdef, params, model_state)
      loss, metrics = self.method.loss(model, target, batch, rng)
      new_model_state = nnx.split(model, nnx.Param, ...)[2].to_pure_dict()
      return loss, (metrics, new_model_state)

    (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    return loss, metrics, model_state, grads

  def _accumulated_grads(self, state, batch, rng):
    """`_grads` of the whole batch, as the mean over `train.grad_accum_steps` micro-batches.

    Accumulation lives inside the step (a scan over micro-batches) rather than in the optimizer
    (optax.MultiSteps), so that one call is one effective step: the step counter, the lr / weight-decay / EMA
    schedules and the EMA update advance once per global batch, and checkpoints and logs count effective
    steps. Only one
    micro-batch's activations are live at a time. Gradients are averaged in float32, so for a loss that is a
    mean over examples (I-JEPA, V-JEPA, IWM) k micro-batches of B/k equal one batch of B up to rounding;
    batch statistics (BatchNorm running stats, carried from one micro-batch to the next, and LeJEPA's SIGReg)
    are those of a micro-batch. Micro-batch i draws its randomness from fold_in(rng, i); metrics are averaged.
    """
    k = self.config.train.grad_accum_steps
    if k == 1:
      return self._grads(state, state["model_state"], batch, rng)

    def split(x):
      # Micro-batch i is rows i, i + k, i + 2k, ...: every device's contiguous slice of the global batch holds
      # B / (k * devices) rows of each micro-batch, so each micro-batch stays spread over all devices and the
      # split moves no data (a contiguous split would put micro-batch i on 1/k of the devices).
      x = jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)
      return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, P(None, parallel.BATCH_AXES)))

    def body(carry, xs):
      grads_sum, model_state = carry
      micro, i = xs
      loss, metrics, model_state, grads = self._grads(state, model_state, micro, jax.random.fold_in(rng, i))
      return (jax.tree.map(jnp.add, grads_sum, grads), model_state), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, state["params"])
    (grads, model_state), (losses, metrics) = jax.lax.scan(
        body, (zeros, state["model_state"]), (jax.tree.map(split, batch), jnp.arange(k)))
    grads = jax.tree.map(lambda g: g / k, grads)
    return losses.mean(), jax.tree.map(lambda m: m.mean(0), metrics), model_state, grads

  def _train_step(self, state, batch):
    step = state["step"]
    rng = jax.random.fold_in(jax.random.key(self.config.seed), step)
    loss, metrics, model_state, grads = self._accumulated_grads(state, batch, rng)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    momentum = self.momentum_fn(step)
    ema = state["ema"]
    if self.method.ema_target:
      ema = jax.tree.map(lambda t, p: momentum * t + (1.0 - momentum) * p, ema, params[self.method.ema_target])

    # Numerical guard: a non-finite loss or gradient never reaches the state (skipped and counted); with
    # nan_policy='stop' the loop then ends the run naming the step.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updated = {"params": params, "model_state": model_state, "ema": ema, "opt_state": opt_state}
    kept = {k: state[k] for k in updated}
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, kept)
    new_state.update(
        step=step + 1,
        skipped=state["skipped"] + (~finite).astype(jnp.int32),
        first_bad_step=jnp.where((~finite) & (state["first_bad_step"] < 0), step, state["first_bad_step"]))
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, lr=self.lr_fn(step), weight_decay=self.wd_fn(step))
    if self.method.ema_target:  # Methods without a teacher (LeJEPA) have no momentum to report.
      metrics["ema_momentum"] = momentum
    return new_state, metrics

  # --- features for probes ------------------------------------------------------------------------------------
  def _apply(self, fn):
    """jit of (state, images) -> fn(model, target, images) in float32, replicated; one per function."""
    if fn not in self._applied:

      def apply(state, images):
        model, target = self.eval_models(state)
        return fn(model, target, images).astype(jnp.float32)

      self._applied[fn] = jax.jit(apply, out_shardings=parallel.replicated(self.mesh))
    return self._applied[fn]

  def extract(self, state, source, max_examples, *, example_fn=None, fn=None, batch_size=None):
    """Frozen features and labels of up to `max_examples` of `source`, in order.

    Args:
      state: the train state.
      source: examples; a fixed subset of `max_examples` is used (0 = all).
      max_examples: see `source`.
      example_fn: per-example transform (default: the method's eval transform).
      fn: fn(model, target, images) -> features (default: `method.features`, read at call time).
      batch_size: global batch (default eval.batch_size), a multiple of the device count.
    """
    source = sources.fixed_subset(source, max_examples)
    example_fn = self.method.example_fn(train=False) if example_fn is None else example_fn
    apply = self._apply(self.method.features if fn is None else fn)
    feats, labels, order = [], [], []
    local_eval_batch = (batch_size or self.config.eval.batch_size) // jax.process_count()
    rank, count = jax.process_index(), jax.process_count()
    for j, batch in enumerate(pipeline.eval_batches(source, example_fn, batch_size=local_eval_batch,
                                                    process_index=rank, process_count=count)):
      images = parallel.global_batch({"image": batch["image"]}, self.batch_sharding)["image"]
      out = np.asarray(apply(state, images))
      # Labels, padding mask and source index travel the same way as the images (a global array, then to
      # every host), so they line up with the feature rows whatever the mesh's device order; eval_batches gives
      # process p the examples p, p + count, ..., and sorting by index returns features in source order, so
      # the probes see the same data in the same order for any number of processes.
      index = (rank + count * (j * local_eval_batch + np.arange(local_eval_batch))).astype(np.int32)
      rows = parallel.host_rows({"mask": batch["mask"], "label": batch["label"], "index": index},
                                self.batch_sharding)
      feats.append(out[rows["mask"]])
      labels.append(rows["label"][rows["mask"]])
      order.append(rows["index"][rows["mask"]])
    order = np.argsort(np.concatenate(order), kind="stable")
    return np.concatenate(feats)[order], np.concatenate(labels)[order]

  def _lidar_views(self, state, eval_source):
    """Features [n, q, ...] of q views (Method.view_fn) of n fixed eval images (see evaluators.py)."""
    c = self.config.eval.lidar
    images = sources.fixed_subset(eval_source, c.samples)
    feats, _ = self.extract(state, evaluators_lib.RepeatedSource(images, c.views), 0,
                            example_fn=self.method.view_fn())
    return feats.reshape(len(images), c.views, *feats.shape[1:])

  def evaluate(self, state, *, random_baseline=None):
    """Runs the evaluators of eval.evaluators on the frozen features of the trained state (and of a random
    init, side by side) and the method's own (extra_evaluations).

    Returns {result: {'trained': value, 'random_init': ...}}: held-out accuracies ('linear', 'knn',
    'few_shot_10', ...) and effective ranks ('rankme', 'lidar'); see jepa/evaluation/evaluators.py.
    """
    cfg = self.config.eval
    random_baseline = cfg.random_baseline if random_baseline is None else random_baseline
    names = evaluators_lib.resolve(cfg.evaluators, self.method.probes)
    eval_source = sources.get_source(self.config.data, "eval")
    num_classes = self.train_source.num_classes
    results = {}
    candidates = {"trained": state}
    if random_baseline:
      candidates["random_init"] = self._init(self.config.seed + 1)
    for name, st in candidates.items():
      xt, yt = self.extract(st, self.train_source, cfg.max_train_examples)
      xe, ye = self.extract(st, eval_source, cfg.max_eval_examples)
      data = evaluators_lib.EvalData(self.config, xt, yt, xe, ye, num_classes,
                                     views=functools.partial(self._lidar_views, st, eval_source))
      for evaluator in names:
        t0 = time.perf_counter()
        for key, value in evaluators_lib.REGISTRY[evaluator](data).items():
          results.setdefault(key, {})[name] = value
        self.eval_seconds[evaluator] = self.eval_seconds.get(evaluator, 0.0) + time.perf_counter() - t0
      # The method's own evaluators (IWM: MRR), beside the probes and in the same layout.
      for key, value in self.method.extra_evaluations(self, st).items():
        results.setdefault(key, {})[name] = value
    return results

  # --- the loop -----------------------------------------------------------------------------------------------
  def run(self, *, stop_at=None):
    """Trains to `train.num_steps` (or stops early at `stop_at`, checkpointing, as a preemption would)."""
    cfg = self.config
    tcfg = cfg.train
    try:
      os.makedirs(self.workdir, exist_ok=True)
    except OSError as e:
      raise ConfigError(f"--workdir={self.workdir} cannot be created ({e.strerror or e}); pass a writable "
                        "folder") from None
    iterator = pipeline.make_train_iterator(
        self.train_source, self.method.example_fn(train=True), batch_size=self.local_batch, seed=cfg.seed,
        process_index=jax.process_index(), process_count=jax.process_count(), num_threads=cfg.data.num_threads,
        prefetch=cfg.data.prefetch, skip_corrupt=cfg.data.skip_corrupt, num_workers=cfg.data.num_workers)
    ckpt = checkpoint_lib.Checkpointer(os.path.join(os.path.abspath(self.workdir), "checkpoints"),
                                       max_to_keep=tcfg.keep_checkpoints)
    self._corrupt = iterator.corrupt  # skip_corrupt's counters (None without it), logged with the metrics.
    config_path = os.path.join(self.workdir, "config.json")
    if ckpt.all_steps():
      # A resumed run must be the run config.json describes: refuse any change but the keys that may change.
      run_config.check_resume(config_path, cfg)
    if self.is_main:  # Before anything compiles; rewritten on resume (num_steps / eval / logging may change).
      # Written aside and renamed: the other processes of a resumed run read it (check_resume above) at the
      # same time, and must see the old file or the new one, never a truncated one.
      with open(config_path + ".tmp", "w", encoding="utf-8") as f:
        f.write(cfg.to_json_best_effort(indent=2))
      os.replace(config_path + ".tmp", config_path)
    restored = ckpt.restore_latest(self.abstract_state, iterator)
    if restored is None:
      state = self._init(cfg.seed)
    else:
      state, _ = restored
      self._log(f"resumed from step {int(state['step'])} in {self.workdir}")
    step = int(state["step"])
    # Rows after `step` in metrics.jsonl come from a run that died before its next checkpoint; the writer
    # drops them because this run logs those steps again (one row per logged step, as uninterrupted).
    writer = metrics_lib.MetricWriter(self.workdir, enabled=self.is_main, start_step=step)
    self.alarm = metrics_lib.CollapseAlarm(
        tuple(self.method.collapse_monitors) + ("probe/rankme/trained", "probe/lidar/trained"),
        fraction=tcfg.collapse_alarm, early_logs=tcfg.collapse_alarm_logs)
    if step and self.is_main:
      # A resumed run rebuilds the early values (and its earlier alarms) from the rows kept in metrics.jsonl.
      for row in metrics_lib.read_jsonl(os.path.join(self.workdir, "metrics.jsonl")):
        self.alarm.observe(row["step"], row)
    start_time = time.perf_counter()

    stop_signal = []
    # Multi-host runs with JAX's preemption service: it owns SIGTERM and agrees a common step across hosts
    # (ckpt.reached_preemption below); a Python handler would shadow it.
    signals = (signal.SIGINT,) if _preemption_service_active() else (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, lambda signum, _: stop_signal.append(signum)) for s in signals}
    progress = metrics_lib.Progress(self.num_steps, tcfg.batch_size, enabled=self.verbose)
    self._progress, self._last_loss = progress, None
    pending = []
    # Steps dispatched but maybe not computed. Waiting for step k-1 before dispatching k+1 keeps at most two in
    # flight: a signal is then honoured within two steps (a preemption notice gives ~30 s), queued batches do
    # not pile up in memory, and img/s / ETA time computed steps rather than dispatches.
    in_flight = collections.deque()
    compile_time = None
    try:
      while step < self.num_steps:
        local = next(iterator)
        batch = parallel.global_batch(local, self.batch_sharding)
        t0 = time.perf_counter()
        state, metrics = self.train_step(state, batch)
        step += 1
        if compile_time is None:
          jax.block_until_ready(state["step"])
          compile_time = time.perf_counter() - t0
          self._log(f"first step (compilation included) took {compile_time:.1f}s")
          progress.start(step)
        else:
          in_flight.append((step, metrics["loss"]))
          if len(in_flight) > 1:
            done, loss = in_flight.popleft()
            jax.block_until_ready(loss)
            progress.completed(done)
        pending.append(metrics)
        if step % tcfg.log_every == 0 or step == self.num_steps:
          jax.block_until_ready(metrics["loss"])
          progress.completed(step)
          in_flight.clear()
          self._log_metrics(step, pending, state, progress, writer)
          pending = []
        with progress.paused():  # Checkpoints and evaluations do not count against the throughput.
          if tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0 and step < self.num_steps:
            self._save(ckpt, step, state, iterator)
          if cfg.eval.every and step % cfg.eval.every == 0 and step < self.num_steps:
            probe = _flat(self.evaluate(state, random_baseline=False))
            writer.write(step, probe, prefix="probe/")
            self._log(f"step {step} evaluations: " + ", ".join(f"{k} {v:.4g}" for k, v in probe.items()))
            self._check_alarms(step, {f"probe/{k}": v for k, v in probe.items()}, writer)
            if cfg.eval.pictures:  # Redrawn at every evaluation, so the run can be watched while it trains.
              from jepa import pictures  # pylint: disable=import-outside-toplevel
              pictures.write_pictures(self, state, alarms=self.alarm.alarms)
        # Called every step on every host, as JAX's preemption sync protocol requires.
        preempted = ckpt.reached_preemption(step)
        if stop_signal or preempted or step == stop_at:
          self._save(ckpt, step, state, iterator)
          ckpt.wait()
          writer.close()
          self.state = state
          reason = (f"received {signal.Signals(stop_signal[0]).name}" if stop_signal else
                    "preemption notice" if preempted else f"stop_at={stop_at}")
          progress.finish()
          self._log(f"{reason}: saved a checkpoint at step {step} and stopped; run the same command to "
                    "resume")
          return {"step": step, "preempted": True}
      self._save(ckpt, step, state, iterator)
      ckpt.wait()
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
      ckpt.close()

    progress.finish()
    self.state = state
    results = {"step": step, "compile_time_s": compile_time, "skipped_steps": int(state["skipped"]),
               "train_time_s": time.perf_counter() - start_time}  # This process's loop, checkpoints included.
    results["health"] = _health(int(state["skipped"]), int(state["first_bad_step"]), self.num_steps,
                                self._last_loss)
    probes = {}
    if cfg.eval.probe:
      t0 = time.perf_counter()
      probes = self.evaluate(state)
      results["evaluation_time_s"] = time.perf_counter() - t0
      writer.write(step, _flat(probes), prefix="probe/")
      for kind, values in probes.items():
        results[f"{kind}_probe" if kind in PROBES else kind] = values
        line = " | ".join(f"{k} {v:.4f}" for k, v in values.items())
        if len(set(values.values())) == 1 and len(values) > 1:  # e.g. a tiny preset's few steps
          line += " (identical: the run trained too little to change this result)"
        self._log(f"{kind} probe accuracy (held-out split): {line}" if kind in PROBES else f"{kind}: {line}")
    writer.close()
    results["alarms"] = list(self.alarm.alarms)
    if results["health"]:
      self._log(f"WARNING: {results['health']}")
    if cfg.eval.pictures:
      t0 = time.perf_counter()
      from jepa import pictures  # pylint: disable=import-outside-toplevel  (matplotlib only when drawing)
      results["pictures"] = pictures.write_pictures(self, state, alarms=self.alarm.alarms)
      results["pictures_time_s"] = time.perf_counter() - t0
    if self.is_main:
      with open(os.path.join(self.workdir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
      if cfg.eval.report:
        from jepa import report  # pylint: disable=import-outside-toplevel
        path = report.write_report(self.workdir, cfg, results, probes, eval_seconds=self.eval_seconds,
                                   fraction=cfg.train.collapse_alarm,
                                   has_predictor="predictor" in self.abstract_state["params"],
                                   has_ema=bool(self.method.ema_target))
        drawn = results.get("pictures")
        self._log(f"wrote {path}" + (f" and {len(drawn)} pictures in {os.path.join(self.workdir, 'pictures')}"
                                     if drawn else ""))
    if 2 * results["skipped_steps"] > self.num_steps:  # The results describe an (almost) untrained model.
      raise TrainingStopped(f"{results['health']}; the results are not those of a trained model: lower "
                            "--config.optim.lr (or find the bad input) and train in a new --workdir")
    return results

  def _check_alarms(self, step, metrics, writer):
    """Feeds a logged row to the collapse alarm; a crossing prints a WARNING and writes an alarm row."""
    for alarm in self.alarm.observe(step, metrics):
      if self.is_main:
        print(metrics_lib.alarm_line(alarm, self.alarm.fraction), flush=True)
      writer.write(step, metrics_lib.alarm_row(alarm))

  def _meta(self, step):
    return {"step": int(step), "method": self.config.method, "config": self.config.to_json_best_effort()}

  def _stop_if_bad(self, state):
    """With nan_policy='stop', ends the run (one line naming the first bad step) once a step was skipped."""
    if self.config.train.nan_policy == "stop" and int(state["skipped"]):
      bad = int(state["first_bad_step"])
      raise TrainingStopped(f"non-finite loss or gradient at step {bad}; the state was not updated and no "
                            "checkpoint holds it. Lower optim.lr, or set --config.train.nan_policy=skip")

  def _save(self, ckpt, step, state, iterator):
    # Checked before every save too, so that with 'stop' no checkpoint is written after a bad step.
    self._stop_if_bad(state)
    ckpt.save(step, state, iterator, self._meta(step))

  def _log_metrics(self, step, pending, state, progress, writer):
    host = jax.device_get(pending)
    averaged = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
    self._stop_if_bad(state)
    averaged["skipped_steps"] = int(state["skipped"])
    if getattr(self, "_corrupt", None) is not None:
      # Corrupt examples replaced by data.skip_corrupt since this process started, summed over processes.
      count = np.asarray(self._corrupt.num_skipped, np.int64)
      if jax.process_count() > 1:
        count = multihost_utils.process_allgather(count).sum()
      averaged["corrupt_skipped"] = int(count)
    self._last_loss = float(host[-1]["loss"])  # The final step's, not the window mean.
    averaged.update(progress.report(step, averaged))
    writer.write(step, averaged)
    self._check_alarms(step, averaged, writer)

  def _log(self, message):
    if self.verbose:
      progress = getattr(self, "_progress", None)
      if progress is not None:
        progress.message(message)  # Below the in-place progress line on a terminal.
      else:
        print(message, flush=True)


def _health(skipped, first_bad, num_steps, last_loss):
  """'' for a healthy run, else one sentence on its skipped steps and non-finite final loss."""
  problems = []
  if skipped:
    problems.append(f"{skipped} of {num_steps} steps were skipped (non-finite loss or gradient, the first at "
                    f"step {first_bad})")
  if last_loss is not None and not np.isfinite(last_loss):
    problems.append(f"the last logged loss is {last_loss}")
  return "; ".join(problems)


def run(config, workdir):
  return Trainer(config, workdir).run()
