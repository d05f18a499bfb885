"""The train state, defined once: its layout, initialisation, shardings and EMA teacher.

jepa.train trains it, jepa.evaluate restores it, jepa.convert writes it, experiments/aot.py compiles it; all
of them build it here, from (config, method, mesh), so a new field is one edit.

The state is a plain pytree of arrays, so it shards, donates and checkpoints without special cases:
  step            int32, the number of updates done
  params          the trained model's nnx.Param values (nested dict)
  model_state     its other variables (e.g. BatchNorm statistics, and `Frozen` weights: see `freeze`)
  ema             the EMA teacher's parameters (a copy of params[method.ema_target]), or {} without a teacher
  opt_state       optax state
  skipped         number of updates skipped because the loss or gradient was not finite
  first_bad_step  the first such step, or -1
A checkpoint holds it together with the data iterator's position (`train_iterator`) and `meta`.
"""
import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jepa import optim
from jepa import parallel
from jepa.data import pipeline

FIELDS = ("step", "params", "model_state", "ema", "opt_state", "skipped", "first_bad_step")


class Frozen(nnx.Variable):
  """A weight that is not trained: not an nnx.Param, so the state keeps it in `model_state`, where it gets no
  gradient, no optimizer update and no weight decay (AdamW decays every parameter it is given, even with a zero
  gradient; it is never given these). Checkpointed with the state like any variable."""


def freeze(module):
  """Turns every nnx.Param of `module` (and its submodules) into a `Frozen` variable of the same value, in
  place; returns `module` (e.g. an encoder restored from another run, kept fixed while a predictor trains)."""
  for _, sub in list(nnx.iter_modules(module)):
    for name, value in list(vars(sub).items()):
      if isinstance(value, nnx.Param):
        setattr(sub, name, Frozen(value[...]))
  return module


@dataclasses.dataclass(frozen=True, eq=False)
class StateDef:
  """What a state of (config, method) on `mesh` is: its model graph, optimizer, schedules and shardings.

  `abstract` is the state's ShapeDtypeStructs with their shardings (what checkpoints restore into), `init`
  a jitted seed -> sharded fresh state, `models` a state -> (model, teacher or None) in eval mode.
  """
  method: Any
  mesh: Any
  graphdef: Any
  teacher_graphdef: Any  # None without an EMA teacher
  tx: optax.GradientTransformation
  lr_fn: Callable[[Any], Any]
  wd_fn: Callable[[Any], Any]
  momentum_fn: Callable[[Any], Any]
  shardings: dict
  abstract: dict
  init: Callable[[int], dict]
  applied: dict = dataclasses.field(default_factory=dict)  # jitted feature functions (jepa/features.py)

  def teacher(self, state):
    """The EMA teacher module rebuilt from `state` (train mode), or None for a method without one."""
    if self.teacher_graphdef is None:
      return None
    rest = state["model_state"].get(self.method.ema_target, {})
    return nnx.merge(self.teacher_graphdef, state["ema"], rest)

  def models(self, state):
    """(model, teacher or None) rebuilt from `state` in eval mode, for evaluators to call inside jit."""
    model = nnx.merge(self.graphdef, state["params"], state["model_state"])
    model.eval()
    teacher = self.teacher(state)
    if teacher is not None:
      teacher.eval()
    return model, teacher


def fresh_state(method, tx, seed):
  """The state of module docstring at step 0, from `method.init_model(nnx.Rngs(seed))` (traceable)."""
  model = method.init_model(nnx.Rngs(seed))
  _, params, model_state = nnx.split(model, nnx.Param, ...)
  params, model_state = params.to_pure_dict(), model_state.to_pure_dict()
  ema = jax.tree.map(jnp.copy, params[method.ema_target]) if method.ema_target else {}
  return {"step": jnp.zeros([], jnp.int32), "params": params, "model_state": model_state, "ema": ema,
          "opt_state": tx.init(params), "skipped": jnp.zeros([], jnp.int32),
          "first_bad_step": jnp.full([], -1, jnp.int32)}


def shardings(abstract_state, ema_target, mesh, min_size):
  """Shardings of every field: MaxText-style rules for params, model state and optimizer moments (which have
  the parameters' shapes, so the same rule shards them alike); the EMA teacher takes the student's shardings
  (taken from them, not re-derived, so they cannot drift if the rule changes); scalars are replicated."""
  out = jax.tree.map(lambda _: parallel.replicated(mesh), abstract_state)
  out["params"] = parallel.tree_shardings(mesh, abstract_state["params"], min_size)
  out["model_state"] = parallel.tree_shardings(mesh, abstract_state["model_state"], min_size)
  out["ema"] = out["params"][ema_target] if ema_target else {}
  out["opt_state"] = parallel.tree_shardings(mesh, abstract_state["opt_state"], min_size)
  return out


def create(config, method, mesh):
  """The StateDef of `config`'s run of `method` on `mesh` (nothing is allocated: shapes only)."""
  lr_fn, wd_fn, momentum_fn = method.schedules(config.train.num_steps)
  tx = optim.make_optimizer(config.optim, lr_fn, wd_fn)
  abstract_model = nnx.eval_shape(lambda: method.init_model(nnx.Rngs(config.seed)))
  graphdef = nnx.split(abstract_model, nnx.Param, ...)[0]
  teacher_graphdef = (nnx.split(getattr(abstract_model, method.ema_target), nnx.Param, ...)[0]
                      if method.ema_target else None)
  init = functools.partial(fresh_state, method, tx)
  abstract = jax.eval_shape(functools.partial(init, config.seed))
  state_shardings = shardings(abstract, method.ema_target, mesh, config.mesh.fsdp_min_size)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
                          state_shardings)
  return StateDef(method=method, mesh=mesh, graphdef=graphdef, teacher_graphdef=teacher_graphdef, tx=tx,
                  lr_fn=lr_fn, wd_fn=wd_fn, momentum_fn=momentum_fn, shardings=state_shardings,
                  abstract=abstract, init=jax.jit(init, static_argnums=0, out_shardings=state_shardings))


def define(config, devices=None):
  """The validated StateDef of `config` on a mesh of `devices` (default: all of jax.devices()); `config`
  must carry every key (config.with_defaults)."""
  from jepa import config as config_lib  # pylint: disable=import-outside-toplevel  (config imports methods)
  from jepa.methods import get_method  # pylint: disable=import-outside-toplevel
  devices = jax.devices() if devices is None else list(devices)
  config_lib.validate(config, num_devices=len(devices), process_count=jax.process_count())
  method = get_method(config)
  method.validate()
  return create(config, method, parallel.make_mesh(config.mesh, devices))


def ema_update(ema, params, momentum):
  """The teacher's update, ema <- momentum * ema + (1 - momentum) * params (optax.incremental_update).

  optax computes step_size * new + (1 - step_size) * old; with new = ema and step_size = momentum this is the
  expression above term by term, so the update is bit-identical to the hand-written one (the other argument
  order rounds differently, by up to 1 ulp)."""
  return optax.incremental_update(new_tensors=ema, old_tensors=params, step_size=momentum)


def from_weights(state_def, params, ema, seed):
  """A step-0 state holding given weights (jepa.convert): fresh model state and optimizer, on the mesh."""
  sh = state_def.shardings
  params = jax.device_put(params, sh["params"])
  ema = jax.device_put(ema, sh["ema"])
  fresh = functools.partial(fresh_state, state_def.method, state_def.tx)
  # jit drops the unused init work: only the model state (none in these ViTs) is computed.
  model_state = jax.jit(lambda: fresh(seed)["model_state"], out_shardings=sh["model_state"])()
  opt_state = jax.jit(state_def.tx.init, out_shardings=sh["opt_state"])(params)
  scalar = lambda value, name: jax.device_put(jnp.asarray(value, jnp.int32), sh[name])
  return {"step": scalar(0, "step"), "params": params, "model_state": model_state, "ema": ema,
          "opt_state": opt_state, "skipped": scalar(0, "skipped"), "first_bad_step": scalar(-1, "first_bad_step")}


def train_iterator(config, method, source):
  """This process's shard of the training stream; its position is checkpointed with the state."""
  return pipeline.make_train_iterator(
      source, method.example_fn(train=True), batch_size=config.train.batch_size // jax.process_count(),
      seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count(),
      num_threads=config.data.num_threads, prefetch=config.data.prefetch, skip_corrupt=config.data.skip_corrupt,
      num_workers=config.data.num_workers)


def meta(config, step, **extra):
  """The checkpoint's metadata: step, method and the whole config (plus e.g. converted_from)."""
  return {"step": int(step), "method": config.method, "config": config.to_json_best_effort(), **extra}
