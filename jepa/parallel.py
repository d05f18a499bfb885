"""Meshes, shardings and multi-host initialisation.

The mesh has two named axes, ("data", "fsdp"):
  - the batch is sharded over both (every device holds a different slice of the global batch);
  - parameters are replicated, except that kernels with at least `fsdp_min_size` elements are sharded over
    "fsdp" along their largest divisible dimension (ZeRO-3 style); optimizer state and the EMA target follow
    the parameters' shardings because they are built from the same rule.
Axis types are `Auto`: XLA propagates shardings from the inputs and parameters, so the models need no sharding
annotations and the same model code runs on 1 device or a pod.
"""
import functools
import os
import sys
import threading

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jepa.errors import ConfigError

BATCH_AXES = ("data", "fsdp")


def maybe_initialize_distributed(cfg):
  """Calls jax.distributed.initialize() when this run is one of several processes.

  Triggered by an explicit coordinator (`distributed.coordinator_address`, `num_processes`, `process_id`:
  any machines, CPU included); by `distributed.initialize` (no arguments: JAX detects a Cloud TPU VM slice
  from its metadata server, or Slurm / Open MPI; tpu/launch.sh sets it, since a TPU VM's environment names no
  hosts); or, with `distributed.auto`, by environment variables of a Slurm job, a GKE TPU pod or a Megascale
  job.
  It must run before anything touches the devices; afterwards jax.devices() lists every host's devices.
  """
  if jax.distributed.is_initialized():
    return
  num, pid, address = cfg.num_processes, cfg.process_id, cfg.coordinator_address
  for name, value in (("num_processes", num), ("process_id", pid)):
    if not isinstance(value, int) or isinstance(value, bool):
      raise ConfigError(f"distributed.{name}={value!r} must be an integer")
  if num < 1:
    raise ConfigError(f"distributed.num_processes={num} must be >= 1 (1 = a single process)")
  if not 0 <= pid < num:
    raise ConfigError(f"distributed.process_id={pid} must be in [0, {num}) for distributed.num_processes={num}; "
                      f"give each process its own id 0..{num - 1} (process 0 hosts the coordinator)")
  if address:
    _initialize_explicit(address, num, pid, cfg.initialization_timeout)
  elif num > 1 and not cfg.initialize and not (cfg.auto and _multiprocess_environment()):
    raise ConfigError(f"distributed.num_processes={num} needs distributed.coordinator_address=HOST:PORT (process "
                      "0's address, the same for every process); pass --config.distributed.coordinator_address=... "
                      "or set distributed.initialize=True on a TPU slice / Slurm job, or num_processes=1")
  elif cfg.initialize:
    jax.distributed.initialize()
  elif cfg.auto and _multiprocess_environment():
    jax.distributed.initialize()


def _multiprocess_environment():
  """Whether the environment names a multi-process job JAX can join by itself (Slurm, GKE TPU, Megascale)."""
  return any(k in os.environ for k in ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"))


def _initialize_explicit(address, num, pid, timeout):
  """jax.distributed.initialize with an explicit coordinator: says what it waits for, and ends the run with one
  line if the other processes have not joined within `timeout` seconds.

  JAX's own timeout aborts the process from C++ (a fatal log line and a stack dump, exit 134), so a Python
  timer fires first (JAX is given a longer deadline): connect() releases the GIL while it waits.
  """
  if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
    raise ConfigError(f"distributed.initialization_timeout={timeout!r} must be a positive number of seconds")
  if num == 1:  # A one-process "cluster": nothing to wait for.
    jax.distributed.initialize(coordinator_address=address, num_processes=1, process_id=0)
    return
  role = "hosting the coordinator" if pid == 0 else "joining the coordinator"
  print(f"process {pid} of {num}: waiting up to {timeout:g}s for {num} processes at {address} ({role}); start "
        f"the others with the same distributed.coordinator_address and process_id 0..{num - 1}", flush=True)

  def give_up():
    print(f"error: process {pid} of {num} timed out after {timeout:g}s waiting for {num} processes at {address}; "
          f"start all {num} (process_id 0..{num - 1}, the same coordinator_address) within "
          "distributed.initialization_timeout seconds, or raise it", file=sys.stderr, flush=True)
    os._exit(2)  # pylint: disable=protected-access  (the main thread is blocked inside JAX's C++ connect)

  timer = threading.Timer(timeout, give_up)
  timer.daemon = True
  timer.start()
  try:
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid,
                               initialization_timeout=int(timeout) + 60)
  finally:
    timer.cancel()


def mesh_shape(mesh_cfg, num_devices):
  """(data, fsdp) sizes; -1 means 'all remaining devices'."""
  data, fsdp = int(mesh_cfg.data), int(mesh_cfg.fsdp)
  if fsdp == -1 and data == -1:
    raise ConfigError("mesh.data and mesh.fsdp are both -1; set at most one of them to -1")
  if data == -1:
    if fsdp <= 0 or num_devices % fsdp:
      raise ConfigError(f"mesh.fsdp={fsdp} does not divide the {num_devices} devices; pick a divisor")
    data = num_devices // fsdp
  if fsdp == -1:
    if data <= 0 or num_devices % data:
      raise ConfigError(f"mesh.data={data} does not divide the {num_devices} devices; pick a divisor")
    fsdp = num_devices // data
  if data * fsdp != num_devices:
    raise ConfigError(f"mesh.data * mesh.fsdp = {data}*{fsdp} != {num_devices} devices; "
                      "set mesh.data=-1 to use all devices")
  return data, fsdp


def make_mesh(mesh_cfg, devices=None):
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(shape, BATCH_AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def batch_sharding(mesh):
  """Leading (batch) axis over all devices; everything else replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def param_spec(shape, fsdp_size, min_size):
  """FSDP rule: shard the largest dimension divisible by the fsdp size, for arrays with >= min_size elements."""
  if fsdp_size <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def tree_shardings(mesh, abstract_tree, min_size):
  """NamedShardings for a pytree of (abstract) arrays under the FSDP rule."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(x.shape, fsdp, min_size)), abstract_tree)


def replicated(mesh):
  return NamedSharding(mesh, P())


def global_batch(local_batch, sharding):
  """Builds global arrays from this process's slice of the batch (each process reads only its shard)."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


@functools.lru_cache(maxsize=None)
def _to_replicated(mesh):
  return jax.jit(lambda tree: tree, out_shardings=replicated(mesh))


def host_rows(local_batch, sharding):
  """The global batch built from every process's rows, as NumPy arrays on every host.

  Rows are in the order of the global array (the mesh's device order), i.e. aligned with the rows of any
  output computed from `global_batch(..., sharding)`. `process_allgather` orders rows by process index
  instead, which differs from the device order on meshes that interleave hosts (e.g. TPU pods).
  """
  out = _to_replicated(sharding.mesh)(global_batch(local_batch, sharding))
  return jax.tree.map(np.asarray, out)
