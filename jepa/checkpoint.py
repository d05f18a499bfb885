"""Orbax checkpoints of the whole run: train state, data-iterator state and run metadata (config, step).

Layout: WORKDIR/checkpoints/<step>/{state,data,meta}. Saves are asynchronous; restoring walks back from the
latest step, so a truncated or corrupt latest checkpoint (a run killed mid-save) falls back to the previous
complete one with a warning instead of ending the run.
"""
import logging

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from jepa.errors import CheckpointError


class Checkpointer:

  def __init__(self, directory, *, max_to_keep=3, async_save=True):
    self.directory = directory
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
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
    finite = jax.tree.reduce(lambda a, b: a & b,
                             jax.tree.map(lambda x: bool(np.all(np.isfinite(np.asarray(x))))
                                          if np.issubdtype(np.asarray(x).dtype, np.floating) else True,
                                          jax.device_get(state)), True)
    if not finite:
      raise CheckpointError(f"refusing to save step {step}: the train state holds NaN/Inf values")
    args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(iterator)
    return self.manager.save(step, args=ocp.args.Composite(**args), force=True)

  def restore_latest(self, abstract_state, iterator):
    """Restores the newest readable checkpoint into the given shardings; returns (state, meta) or None."""
    for step in reversed(self.all_steps()):
      try:
        args = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if iterator is not None:
          args["data"] = grain.checkpoint.CheckpointRestore(iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**args))
        return restored["state"], restored["meta"]
      except Exception as e:  # pylint: disable=broad-except  (any unreadable checkpoint: fall back)
        logging.warning("checkpoint at step %d is unreadable (%s: %s); falling back to the previous one",
                        step, type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
        print(f"WARNING: checkpoint {step} is unreadable ({type(e).__name__}); trying the previous one",
              flush=True)
    return None

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
