"""Orbax checkpoints of the whole run: train state, data-iterator state and run metadata (config, step).

Layout: WORKDIR/checkpoints/<step>/{state,data,meta}. Saves are asynchronous; restoring walks back from the
latest step, so a truncated or corrupt latest checkpoint falls back to the previous complete one with a
warning instead of ending the run.

Why a kill -9 cannot leave a complete-looking broken checkpoint: Orbax writes every item into
`<step>.orbax-checkpoint-tmp` and renames it to `<step>` only after all items are written (an atomic rename on
POSIX file systems; on GCS a `commit_success.txt` marker plays that role), and `all_steps()` lists only
finalized steps. Leftover tmp folders are deleted when the next run opens the directory. Corruption after the
fact (a truncated or bit-flipped file) is caught by a per-leaf checksum of the state stored in `meta` at save
time and compared after every restore; unreadable newer checkpoints are moved to `<dir>.corrupt/` so that the
resumed run can save those steps again.
"""
import logging
import sys
import threading

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from jepa.errors import CheckpointError


_hook_lock = threading.Lock()
_silenced = {"count": 0}


def _contain_closed_loop_callbacks():
  """Drops the "Event loop is closed" RuntimeErrors that TensorStore's late read callbacks raise after Orbax
  gave up on an unreadable checkpoint (hundreds of tracebacks on stderr, one per pending read).

  Orbax runs each restore in its own asyncio loop and closes it when an item fails; reads still in flight then
  complete on TensorStore's threads and call `loop.call_soon_threadsafe` on the closed loop, and Python reports
  each failure through `sys.unraisablehook`. Only that error is dropped (and counted); every other unraisable
  exception goes to the previous hook. Installed once, process-wide, by the first Checkpointer.
  """
  with _hook_lock:
    previous = sys.unraisablehook
    if getattr(previous, "_jepa_contains_closed_loops", False):
      return

    def hook(unraisable):
      exc = unraisable.exc_value
      if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        _silenced["count"] += 1
        return
      previous(unraisable)

    hook._jepa_contains_closed_loops = True  # pylint: disable=protected-access
    sys.unraisablehook = hook
    # The same abandoned reads, when they fail, are reported by asyncio as "Task exception was never
    # retrieved" (an ERROR record with the whole TensorStore spec): the failure itself is already the one
    # WARNING line of restore_latest.
    logging.getLogger("asyncio").addFilter(_AbandonedOrbaxTasks())


class _AbandonedOrbaxTasks(logging.Filter):
  """Drops asyncio's "... exception was never retrieved" records of Orbax's abandoned restore tasks."""

  def filter(self, record):
    message = record.getMessage()
    if message.startswith(("Task exception was never retrieved", "Future exception was never retrieved")) and (
        "orbax" in message or "tensorstore" in message.lower()):
      _silenced["count"] += 1
      return False
    return True


def _is_shape_mismatch(reason):
  """Whether an Orbax restore failure says the stored arrays have other shapes than the model's."""
  return "not compatible with the stored shape" in reason or "Requested shape" in reason


@jax.jit
def _all_finite(tree):
  """True iff every floating leaf of `tree` is finite, as one replicated scalar.

  Computed on the devices rather than on the host: with FSDP over several hosts no process can read the whole
  state, and a jitted reduction gives every process the same answer (a per-host check of local shards could
  make one host refuse a save that the others go on with, and hang them in the save's barrier).
  """
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _leaf_checksum(x):
  """Sum of the raw bits of `x` mod 2**32: exact, so independent of sharding and reduction order."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return jnp.sum(x.astype(jnp.uint32), dtype=jnp.uint32)
  bits = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}")).astype(jnp.uint32)
  return jnp.sum(bits, dtype=jnp.uint32)


@jax.jit
def checksums(tree):
  """uint32 [num_leaves]: one bit checksum per leaf, computed where the leaves live (as `_all_finite`).

  Stored in `meta` at save time and compared after a restore: Orbax itself reads a flipped byte inside an
  array file back without complaint.
  """
  leaves = [_leaf_checksum(x) for x in jax.tree.leaves(tree)]
  return jnp.stack(leaves) if leaves else jnp.zeros([0], jnp.uint32)


class Checkpointer:
  """Saves and restores WORKDIR/checkpoints; see the module docstring for the crash-safety guarantees."""

  def __init__(self, directory, *, max_to_keep=3, async_save=True):
    _contain_closed_loop_callbacks()
    self.directory = directory
    # A run killed mid-save leaves `<step>.orbax-checkpoint-tmp` (never a step); delete such leftovers.
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(
        directory, options=options, item_names=("state", "data", "meta"),
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def all_steps(self):
    return sorted(self.manager.all_steps())

  def save(self, step, state, iterator, meta):
    """Saves unless `step` is already saved. Refuses non-finite states: a poisoned checkpoint is never written."""
    if step in self.manager.all_steps():
      return False
    if not bool(_all_finite(state)):
      raise CheckpointError(f"refusing to save step {step}: the train state holds NaN/Inf values")
    meta = dict(meta, checksums=[int(c) for c in jax.device_get(checksums(state))])
    args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(iterator)
    return self.manager.save(step, args=ocp.args.Composite(**args), force=True)

  def reached_preemption(self, step):
    """Whether the platform's preemption notice (JAX's preemption sync service, multi-host) calls for a save
    at `step`; always False on a single process, where SIGTERM is handled by the loop itself."""
    return self.manager.reached_preemption(step)

  def restore_latest(self, abstract_state, iterator, *, mismatch_fix=None, steps=None):
    """Restores the newest readable checkpoint into the given shardings; returns (state, meta) or None.

    `steps` limits the candidates (default: every saved step), e.g. to one step for re-evaluating it.

    A checkpoint is readable when Orbax restores every item and the state's checksums match those saved with
    it. Unreadable newer ones are moved aside (with a warning); if checkpoints exist but none is readable the
    run stops with a CheckpointError rather than silently starting over. When every one fails because its
    arrays have other shapes than `abstract_state` (the config describes another model), the error says so,
    with `mismatch_fix` as the fix (default: the fix for a training run).
    """
    initial_position = iterator.get_state() if iterator is not None else None
    unreadable = []
    for step in reversed([s for s in self.all_steps() if steps is None or s in steps]):
      try:
        args = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if iterator is not None:
          args["data"] = grain.checkpoint.CheckpointRestore(iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**args))
        state, meta = restored["state"], restored["meta"]
        expected = meta.get("checksums")
        if expected is not None:  # Checkpoints written before checksums existed are trusted as read.
          actual = jax.device_get(checksums(state))
          if len(actual) != len(expected):
            raise CheckpointError(f"the state has {len(actual)} arrays but {len(expected)} checksums")
          bad = sum(int(a) != int(b) for a, b in zip(actual, expected))
          if bad:
            raise CheckpointError(f"checksum mismatch in {bad} of {len(actual)} state arrays")
      except Exception as e:  # pylint: disable=broad-except  (any unreadable checkpoint: fall back)
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        detail = detail.split(" See full TensorStore details")[0].split(" Truncating/padding is disabled")[0][:200]
        reason = f"{type(e).__name__}: {detail}" if detail else type(e).__name__
        unreadable.append((step, reason))
        print(f"WARNING: checkpoint {step} is unreadable ({reason}); trying the previous one", flush=True)
        continue
      self._move_aside([s for s, _ in unreadable])
      return state, meta
    if iterator is not None:
      iterator.set_state(initial_position)  # A failed attempt may have moved it.
    if unreadable:
      step, reason = unreadable[0]
      head = f"no checkpoint in {self.directory} is readable (step {step}: {reason})"
      if all(_is_shape_mismatch(r) for _, r in unreadable):
        fix = mismatch_fix or ("resume with the run's own model keys (--config=jepa/run_config.py:WORKDIR) or "
                               "train this config in a new --workdir")
        raise CheckpointError(f"{head}; they hold a model of other shapes than the config's: {fix}")
      raise CheckpointError(f"{head}; if the config changed since they were written use a new --workdir, else "
                            "move that folder away to start over")
    return None

  def _move_aside(self, steps):
    """Moves unreadable step folders to `<directory>.corrupt/` (kept for inspection, out of Orbax's sight)."""
    if not steps:
      return
    if jax.process_index() == 0:
      root = epath.Path(self.directory)
      aside = root.parent / f"{root.name}.corrupt"
      aside.mkdir(parents=True, exist_ok=True)
      for step in steps:
        target, n = aside / str(step), 1
        while target.exists():
          target, n = aside / f"{step}.{n}", n + 1
        (root / str(step)).rename(target)
        print(f"WARNING: moved the unreadable checkpoint {step} to {target}", flush=True)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("jepa_checkpoint_move_aside")
    self.manager.reload()

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
