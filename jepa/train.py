"""The one training loop, for every method, read top to bottom.

  train_and_evaluate(config, workdir)  =  fit(setup(config, workdir))
  setup   config -> distributed init -> mesh -> data (this process's shard) -> the train state's definition
          (jepa/train_state.py: layout, shardings, EMA teacher) -> the jitted step (donated state, compiled once)
  train   restore the latest checkpoint (state + data position) or init -> loop: step, then the hooks
          (jepa/hooks.py: log with the collapse alarm and the NaN stop, checkpoint, evaluate, pictures,
          preemption) -> final checkpoint
  fit     train, then the end of the run (jepa/finish.py: evaluators, results.json, pictures, report.md)

Randomness: the step's key is fold_in(key(seed), step), so a resumed run draws exactly what an uninterrupted
one would; the data iterator's position is checkpointed with the state.
"""
import collections
import dataclasses
import functools
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from jepa import checkpoint as checkpoint_lib
from jepa import config as config_lib
from jepa import finish as finish_lib
from jepa import hooks as hooks_lib
from jepa import metrics as metrics_lib
from jepa import parallel
from jepa import run_config
from jepa import train_state
from jepa.data import sources
from jepa.errors import ConfigError
from jepa.evaluation import evaluators as evaluators_lib
from jepa.evaluation import suite
from jepa.hooks import TrainingStopped  # noqa: F401  (raised by the loop; callers catch it)


@dataclasses.dataclass(eq=False)
class Run:
  """Everything `train` and `fit` need, built once by `setup` (a test or experiment may rerun it)."""
  config: Any
  workdir: str
  method: Any
  mesh: Any
  state_def: train_state.StateDef
  train_source: Any
  train_step: Callable  # jit of (state, global batch) -> (state, metrics)
  verbose: bool
  eval_seconds: dict = dataclasses.field(default_factory=dict)  # per evaluator, summed (for the report)


# ===== setup ==================================================================================================
def setup(config, workdir, *, verbose=True, devices=None):
  """Builds a Run; `devices` (default jax.devices()) may be another platform's, e.g. a TPU topology's for
  ahead-of-time compilation on a CPU machine (experiments/aot.py): such a Run lowers, never runs."""
  config = config_lib.with_defaults(config)  # A config.json from before a key existed gets its default.
  if devices is None:
    parallel.maybe_initialize_distributed(config.distributed)
  state_def = train_state.define(config, devices)
  method, mesh = state_def.method, state_def.mesh
  evaluators_lib.resolve(config.eval.evaluators, method.probes)  # An unknown name fails here.
  train_source = sources.get_source(config.data, "train")  # A missing dataset fails before anything compiles.
  step = jax.jit(functools.partial(train_step, config, state_def),
                 in_shardings=(state_def.shardings, parallel.batch_sharding(mesh)),
                 out_shardings=(state_def.shardings, parallel.replicated(mesh)), donate_argnums=0)
  return Run(config=config, workdir=workdir, method=method, mesh=mesh, state_def=state_def,
             train_source=train_source, train_step=step, verbose=verbose and jax.process_index() == 0)


# ===== the step ===============================================================================================
def grads(state_def, state, model_state, batch, rng):
  """(loss, metrics, updated model_state, gradients w.r.t. state['params']) of one (micro-)batch."""

  def loss_fn(params):
    # The teacher is rebuilt here, in the trace that calls it: an NNX module built outside value_and_grad
    # cannot be called through nnx.remat inside it (model.remat=True would raise TraceContextError).
    teacher = state_def.teacher(state)
    model = nnx.merge(state_def.graphdef, params, model_state)
    loss, metrics = state_def.method.loss(model, teacher, batch, rng)
    return loss, (metrics, nnx.split(model, nnx.Param, ...)[2].to_pure_dict())

  (loss, (metrics, model_state)), g = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
  return loss, metrics, model_state, g


def accumulated_grads(state_def, k, state, batch, rng):
  """`grads` of the whole batch, as the mean over k = `train.grad_accum_steps` micro-batches.

  Accumulation lives inside the step (a scan over micro-batches) rather than in the optimizer
  (optax.MultiSteps), so that one call is one effective step: the step counter, the schedules and the EMA
  update advance once per global batch, and checkpoints and logs count effective steps. Only one micro-batch's
  activations are live at a time. Gradients are averaged in float32, so for a loss that is a mean over
  examples (I-JEPA, V-JEPA, IWM) k micro-batches of B/k equal one batch of B up to rounding; batch statistics
  (BatchNorm running stats, carried from one micro-batch to the next, and LeJEPA's SIGReg) are those of a
  micro-batch. Micro-batch i draws its randomness from fold_in(rng, i); metrics are averaged.
  """
  if k == 1:
    return grads(state_def, state, state["model_state"], batch, rng)

  def split(x):
    # Micro-batch i is rows i, i + k, i + 2k, ...: every device's contiguous slice of the global batch holds
    # B / (k * devices) rows of each micro-batch, so each micro-batch stays spread over all devices and the
    # split moves no data (a contiguous split would put micro-batch i on 1/k of the devices).
    x = jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)
    return jax.lax.with_sharding_constraint(x, NamedSharding(state_def.mesh, P(None, parallel.BATCH_AXES)))

  def body(carry, xs):
    grads_sum, model_state = carry
    micro, i = xs
    loss, metrics, model_state, g = grads(state_def, state, model_state, micro, jax.random.fold_in(rng, i))
    return (jax.tree.map(jnp.add, grads_sum, g), model_state), (loss, metrics)

  zeros = jax.tree.map(jnp.zeros_like, state["params"])
  (g, model_state), (losses, metrics) = jax.lax.scan(
      body, (zeros, state["model_state"]), (jax.tree.map(split, batch), jnp.arange(k)))
  return losses.mean(), jax.tree.map(lambda m: m.mean(0), metrics), model_state, jax.tree.map(lambda x: x / k, g)


def train_step(config, state_def, state, batch):
  """One update: gradients, optimizer, EMA teacher; a non-finite loss or gradient never reaches the state."""
  step, ema_target = state["step"], state_def.method.ema_target
  rng = jax.random.fold_in(jax.random.key(config.seed), step)
  loss, metrics, model_state, g = accumulated_grads(state_def, config.train.grad_accum_steps, state, batch, rng)
  grad_norm = optax.tree.norm(g)
  updates, opt_state = state_def.tx.update(g, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  momentum = state_def.momentum_fn(step)
  ema = train_state.ema_update(state["ema"], params[ema_target], momentum) if ema_target else state["ema"]
  # Numerical guard: skipped and counted; with nan_policy='stop' the NonFiniteStop hook ends the run.
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updated = {"params": params, "model_state": model_state, "ema": ema, "opt_state": opt_state}
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, {k: state[k] for k in updated})
  new_state.update(step=step + 1, skipped=state["skipped"] + (~finite).astype(jnp.int32),
                   first_bad_step=jnp.where((~finite) & (state["first_bad_step"] < 0), step,
                                            state["first_bad_step"]))
  metrics = dict(metrics, loss=loss, grad_norm=grad_norm, lr=state_def.lr_fn(step),
                 weight_decay=state_def.wd_fn(step))
  if ema_target:  # Methods without a teacher (LeJEPA) have no momentum to report.
    metrics["ema_momentum"] = momentum
  return new_state, metrics


# ===== evaluation and pictures, as the loop and the end of the run call them ==================================
def evaluate(run, state, *, random_baseline=None):
  """The evaluators of eval.evaluators on the trained state (and a random init, side by side)."""
  cfg = run.config.eval
  random_baseline = cfg.random_baseline if random_baseline is None else random_baseline
  states = {"trained": state}
  if random_baseline:
    states["random_init"] = run.state_def.init(run.config.seed + 1)
  return suite.evaluate(run.config, run.state_def, states, run.train_source,
                        sources.get_source(run.config.data, "eval"),
                        names=evaluators_lib.resolve(cfg.evaluators, run.method.probes),
                        feature_fn=run.method.features, seconds=run.eval_seconds)


def pictures_fn(run):
  """(state, alarms) -> {name: path} drawing the run's pictures, or None when eval.pictures is off."""
  if not run.config.eval.pictures:
    return None
  from jepa import pictures  # pylint: disable=import-outside-toplevel  (matplotlib only when drawing)
  return functools.partial(pictures.write_pictures, run.config, run.state_def, run.workdir)


# ===== the loop ===============================================================================================
def _open(run):
  """(checkpointer, iterator, restored state or None): config.json checked on resume and written."""
  try:
    os.makedirs(run.workdir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--workdir={run.workdir} cannot be created ({e.strerror or e}); pass a writable "
                      "folder") from None
  iterator = train_state.train_iterator(run.config, run.method, run.train_source)
  ckpt = checkpoint_lib.Checkpointer(os.path.join(os.path.abspath(run.workdir), "checkpoints"),
                                     max_to_keep=run.config.train.keep_checkpoints)
  if ckpt.all_steps():
    # A resumed run must be the run config.json describes: refuse any change but the keys that may change.
    run_config.check_resume(os.path.join(run.workdir, run_config.CONFIG_FILE), run.config)
  if jax.process_index() == 0:  # Before anything compiles; rewritten on resume (num_steps, eval may change).
    run_config.save(run.config, run.workdir)
  restored = ckpt.restore_latest(run.state_def.abstract, iterator)
  return ckpt, iterator, None if restored is None else restored[0]


def train(run, *, stop_at=None):
  """Trains to train.num_steps, or stops early (checkpointing, as a preemption would) at `stop_at`, a signal
  or a preemption notice. Returns (state, summary, metric writer); summary['preempted'] says which; the writer
  is still open after a whole run, for the end of the run's rows."""
  cfg, num_steps = run.config, run.config.train.num_steps
  ckpt, iterator, state = _open(run)
  progress = metrics_lib.Progress(num_steps, cfg.train.batch_size, enabled=run.verbose)
  log = functools.partial(_log, run.verbose, progress)
  if state is None:
    state = run.state_def.init(cfg.seed)
  else:
    log(f"resumed from step {int(state['step'])} in {run.workdir}")
  step = int(state["step"])
  # Rows after `step` in metrics.jsonl come from a run that died before its next checkpoint; the writer drops
  # them because this run logs those steps again (one row per logged step, as uninterrupted).
  writer = metrics_lib.MetricWriter(run.workdir, enabled=jax.process_index() == 0, start_step=step)
  hooks, paused_hooks, saver, logger, alarms = _hooks(run, ckpt, iterator, writer, progress, log)
  if step and jax.process_index() == 0:
    alarms.replay(metrics_lib.read_jsonl(os.path.join(run.workdir, "metrics.jsonl")))
  start_time, compile_time = time.perf_counter(), None
  # Steps dispatched but maybe not computed. Waiting for step k-1 before dispatching k+1 keeps at most two in
  # flight: a signal is then honoured within two steps (a preemption notice gives ~30 s), queued batches do not
  # pile up in memory, and img/s / ETA time computed steps rather than dispatches.
  in_flight = collections.deque()
  with hooks_lib.Preemption(ckpt, stop_at) as preemption:
    try:
      while step < num_steps:
        batch = parallel.global_batch(next(iterator), parallel.batch_sharding(run.mesh))
        t0 = time.perf_counter()
        state, metrics = run.train_step(state, batch)
        step += 1
        if compile_time is None:
          jax.block_until_ready(state["step"])
          compile_time = time.perf_counter() - t0
          log(f"first step (compilation included) took {compile_time:.1f}s")
          progress.start(step)
        else:
          in_flight.append((step, metrics["loss"]))
          if len(in_flight) > 1:
            done, loss = in_flight.popleft()
            jax.block_until_ready(loss)
            progress.completed(done)
        if step % cfg.train.log_every == 0 or step == num_steps:
          jax.block_until_ready(metrics["loss"])
          in_flight.clear()
        for hook in hooks:
          hook(step, state, metrics)
        with progress.paused():  # Checkpoints and evaluations do not count against the throughput.
          for hook in paused_hooks:
            hook(step, state, metrics)
        reason = preemption.stop_reason(step)
        if reason:
          return _stop(ckpt, saver, writer, progress, log, step, state, reason)
      saver.save(step, state)
      ckpt.wait()
    finally:
      ckpt.close()
  progress.finish()
  summary = {"step": step, "compile_time_s": compile_time, "train_time_s": time.perf_counter() - start_time,
             "last_loss": logger.last_loss, "alarms": alarms.alarm.alarms, "preempted": False}
  return state, summary, writer  # train_time_s: this process's loop, checkpoints included.


def _hooks(run, ckpt, iterator, writer, progress, log):
  """(hooks, hooks outside the throughput's clock, checkpoint hook, metrics logger, alarms) of the loop."""
  cfg, num_steps = run.config, run.config.train.num_steps
  is_main = jax.process_index() == 0
  guard = hooks_lib.NonFiniteStop(cfg.train.nan_policy, cfg.train.log_every, num_steps)
  monitors = tuple(run.method.collapse_monitors) + ("probe/rankme/trained", "probe/lidar/trained")
  alarms = hooks_lib.Alarms(monitors, cfg.train, writer, is_main=is_main)
  logger = hooks_lib.LogMetrics(cfg.train.log_every, num_steps, writer, alarms, progress,
                                corrupt=iterator.corrupt)
  saver = hooks_lib.Checkpoint(cfg.train.checkpoint_every, num_steps, ckpt, iterator, guard,
                               functools.partial(train_state.meta, cfg))
  evaluate_fn = lambda state: suite.flat(evaluate(run, state, random_baseline=False))
  evaluator = hooks_lib.Evaluate(cfg.eval.every, num_steps, evaluate_fn, writer, alarms, log,
                                 pictures_fn=pictures_fn(run))
  return (guard, logger), (saver, evaluator), saver, logger, alarms


def _stop(ckpt, saver, writer, progress, log, step, state, reason):
  """Saves and ends the loop early (a signal, a preemption notice or stop_at)."""
  saver.save(step, state)
  ckpt.wait()
  writer.close()
  progress.finish()
  log(f"{reason}: saved a checkpoint at step {step} and stopped; run the same command to resume")
  return state, {"step": step, "preempted": True}, writer


def _log(verbose, progress, message):
  if verbose:
    progress.message(message)  # Below the in-place progress line on a terminal.


# ===== train and evaluate =====================================================================================
def fit(run, *, stop_at=None):
  """`train`, then (unless it stopped early) the end of the run; returns (state, results)."""
  state, summary, writer = train(run, stop_at=stop_at)
  if summary["preempted"]:
    return state, summary
  progress = metrics_lib.Progress(run.config.train.num_steps, run.config.train.batch_size, enabled=False)
  results = finish_lib.finish(
      run.config, run.workdir, state, summary, evaluate_fn=functools.partial(evaluate, run),
      pictures_fn=pictures_fn(run), writer=writer, log=functools.partial(_log, run.verbose, progress),
      is_main=jax.process_index() == 0, has_predictor="predictor" in run.state_def.abstract["params"],
      has_ema=bool(run.method.ema_target), eval_seconds=run.eval_seconds)
  return state, results


def train_and_evaluate(config, workdir, *, stop_at=None):
  """The whole run of `config` in `workdir`: (final state, results dict)."""
  return fit(setup(config, workdir), stop_at=stop_at)
