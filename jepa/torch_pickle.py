r"""Reads files written by `torch.save` into NumPy arrays, without torch and without running code from the file.

  obj = torch_pickle.load("IN1K-vit.h.14-300e.pth.tar")   # {'encoder': {'module.patch_embed.proj.weight':
                                                           #   ndarray, ...}, 'epoch': 300, ...}

Formats: the zip archive of torch >= 1.6 (`<prefix>/data.pkl`, the pickle, and `<prefix>/data/<key>`, one raw
little-endian storage per key; entries stored uncompressed, so they are memory-mapped and only the tensors that
are used are read from disk) and the legacy format of `_use_new_zipfile_serialization=False` (a magic number,
protocol and system-info pickle, the pickle, its list of storage keys, then each storage as an int64 element
count and its bytes).

Safety: the pickle is read by a restricted unpickler. Its globals are only

  torch._utils._rebuild_tensor_v2, _rebuild_parameter, _rebuild_parameter_with_state  -> the NumPy array
  torch._tensor._rebuild_from_type_v2 with torch.Tensor / torch.nn.parameter.Parameter  -> the NumPy array
  torch.{Float,Double,Half,BFloat16,Long,Int,Short,Char,Byte,Bool}Storage, torch.UntypedStorage (markers)
  collections.OrderedDict, builtins.set / frozenset, _codecs.encode (how protocol 2 pickles bytes)

all replaced by small functions here, and its persistent ids only torch's `('storage', type, key, location,
numel)`. Any other global (`os.system`, a model class, `numpy.*`, TorchScript's `__torch__.*`) is refused with
a one-line `CheckpointError` naming it, before anything is called; BUILD (setting an object's state) is allowed
on OrderedDicts only (their `_metadata`). Tensors become read-only arrays that share memory exactly where the
tensors shared a storage (views keep their offset and strides); bfloat16 is `ml_dtypes.bfloat16` (a JAX
dependency). Tensor metadata such as requires_grad is dropped.
"""
import _compat_pickle
import collections
import io
import pickle
import struct
import tarfile
import zipfile

import numpy as np

from jepa.errors import CheckpointError

# torch's storage classes -> NumPy dtype names (bfloat16 is resolved through ml_dtypes when first needed).
STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool", "UntypedStorage": "uint8",
}
LEGACY_MAGIC = 0x1950a86a20f9469cfc6c  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001                 # torch.serialization.PROTOCOL_VERSION
TORCH_EXTRA = 'pip install -e ".[torch]"'


def _dtype(name):
  if name == "bfloat16":
    import ml_dtypes  # pylint: disable=import-outside-toplevel  (ships with jax; needed only for bf16)
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(name)


class _StorageType:
  """What `torch.FloatStorage` etc. unpickle to: only a dtype, for the persistent ids."""

  def __init__(self, name):
    self.name, self.dtype = name, STORAGE_DTYPES[name]

  def __repr__(self):
    return f"torch.{self.name}"


class _TensorType:
  """What `torch.Tensor` / `torch.nn.parameter.Parameter` unpickle to (arguments of _rebuild_from_type_v2)."""

  def __init__(self, name):
    self.name = name


class _Storage:
  """One storage of the file: `array` is its 1-D NumPy array (None while the legacy format's first pass runs)."""

  def __init__(self, key, dtype, numel, array):
    self.key, self.dtype, self.numel, self.array = key, dtype, numel, array

  def tensor(self, offset, size, stride):
    """The array view torch's `storage[offset:]` as_strided(size, stride) is, after checking it is in bounds."""
    if not (_is_int(offset) and isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and all(map(_is_int, size)) and all(map(_is_int, stride))):
      raise pickle.UnpicklingError(f"a tensor of storage {self.key!r} has a malformed offset, size or stride")
    if self.array is None:
      return None
    if offset < 0 or min(size, default=0) < 0 or min(stride, default=0) < 0:
      raise pickle.UnpicklingError(f"a tensor of storage {self.key!r} has a negative offset, size or stride")
    if 0 in size:
      empty = np.zeros(size, self.array.dtype)
      empty.flags.writeable = False
      return empty
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= self.numel:
      raise pickle.UnpicklingError(f"a tensor of storage {self.key!r} reaches element {last}, past the "
                                   f"storage's {self.numel} elements")
    item = self.array.itemsize
    return np.lib.stride_tricks.as_strided(self.array[offset:], shape=size, strides=[s * item for s in stride],
                                           writeable=False)


def _is_int(x):
  return isinstance(x, int) and not isinstance(x, bool)


# --- the functions the allowed globals stand for --------------------------------------------------------------
def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, _Storage):
    raise pickle.UnpicklingError("_rebuild_tensor_v2 got no storage")
  return storage.tensor(storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
  del requires_grad, backward_hooks, state
  if data is not None and not isinstance(data, np.ndarray):
    raise pickle.UnpicklingError(f"_rebuild_parameter got a {type(data).__name__}, not a tensor")
  return data


def _rebuild_from_type_v2(func, new_type, args, state=None):
  del state
  if func not in (_rebuild_tensor_v2, _rebuild_parameter) or not isinstance(new_type, _TensorType):
    raise pickle.UnpicklingError("_rebuild_from_type_v2 is allowed only for plain tensors and parameters")
  if not isinstance(args, tuple):
    raise pickle.UnpicklingError("_rebuild_from_type_v2 got malformed arguments")
  return func(*args)


def _encode(text, encoding="latin1"):
  """`_codecs.encode`, as protocol 2 pickles bytes: only str -> latin-1 bytes."""
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
    raise pickle.UnpicklingError("_codecs.encode is allowed only for latin-1 text (pickled bytes)")
  return text.encode("latin1")


def _ordered_dict(items=()):
  return collections.OrderedDict(items)


ALLOWED = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    "torch.Tensor": _TensorType("Tensor"),
    "torch.nn.parameter.Parameter": _TensorType("Parameter"),
    "collections.OrderedDict": _ordered_dict,
    "builtins.set": lambda items=(): set(items),
    "builtins.frozenset": lambda items=(): frozenset(items),
    "_codecs.encode": _encode,
    **{f"torch.{name}": _StorageType(name) for name in STORAGE_DTYPES},
}


class _Refused(Exception):
  """A global outside ALLOWED (or another construct this reader does not run); `str` is its description."""


class _Unpickler(pickle._Unpickler):  # pylint: disable=protected-access  (the pure-Python one: BUILD is ours)
  """Unpickles with the ALLOWED globals only; torch's persistent ids become `_Storage`s via `storage(...)`."""

  dispatch = dict(pickle._Unpickler.dispatch)  # pylint: disable=protected-access

  def __init__(self, file, storage):
    super().__init__(file, encoding="utf-8")
    self._storage = storage

  def find_class(self, module, name):
    if self.proto < 3:  # protocol 2 (torch.save's) writes Python 2 names, e.g. __builtin__.set
      module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
      module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    full = f"{module}.{name}"
    if full not in ALLOWED:
      raise _Refused(full)
    return ALLOWED[full]

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] in ("storage", b"storage")):
      raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:80]}")
    _, storage_type, key, _, numel = pid[:5]
    if len(pid) == 6 and pid[5] is not None:  # legacy storage views (torch < 1.0)
      raise _Refused("a legacy storage view (torch < 1.0 file)")
    if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not _is_int(numel) or numel < 0:
      raise pickle.UnpicklingError(f"malformed storage id {str(pid)[:80]}")
    return self._storage(key, storage_type.dtype, numel)

  def load_build(self):
    state = self.stack.pop()
    inst = self.stack[-1]
    if type(inst) is not collections.OrderedDict:  # pylint: disable=unidiomatic-typecheck
      raise _Refused(f"setting the state of a {type(inst).__name__}")
    if isinstance(state, tuple) and len(state) == 2:
      state, slots = state
      if slots:
        raise _Refused("setting slots of an OrderedDict")
    if state:
      if not isinstance(state, dict):
        raise pickle.UnpicklingError("malformed OrderedDict state")
      inst.__dict__.update(state)

  dispatch[pickle.BUILD[0]] = load_build


# --- the two file formats ------------------------------------------------------------------------------------
def _open_map(path, mmap):
  """The whole file as a read-only uint8 memory map, or None (then storages are read into memory)."""
  if not mmap:
    return None
  try:
    return np.memmap(path, np.uint8, mode="r")
  except (OSError, ValueError):
    return None


def _load_zip(path, name, mmap):
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
      raise CheckpointError(f"{name} is a TorchScript archive (torch.jit.save), not a torch.save checkpoint; "
                            "pass the training checkpoint (.pth / .pth.tar / .pt) with the state dicts")
    if not pickles:
      raise CheckpointError(f"{name} is a zip file without the data.pkl of a torch.save checkpoint (it holds "
                            f"{names[:5]}{' ...' if len(names) > 5 else ''}); pass an official .pth / .pt file")
    prefix = pickles[0][:-len("data.pkl")]
    if f"{prefix}byteorder" in names and zf.read(f"{prefix}byteorder").strip() not in (b"", b"little"):
      raise CheckpointError(f"{name} was written on a big-endian machine, which this reader does not support; "
                            f"re-save it on a little-endian one with torch ({TORCH_EXTRA})")
    whole = _open_map(path, mmap)
    cache = {}

    def storage(key, dtype, numel):
      if key not in cache:
        record = f"{prefix}data/{key}"
        try:
          info = zf.getinfo(record)
        except KeyError:
          raise pickle.UnpicklingError(f"the archive has no record {record!r} for storage {key!r}") from None
        dt = _dtype(dtype)
        if info.file_size < numel * dt.itemsize:
          raise pickle.UnpicklingError(f"record {record!r} has {info.file_size} bytes, fewer than the "
                                       f"{numel} x {dt.itemsize} its storage needs")
        if whole is not None and info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1:
          # The local header's name and extra field (torch pads it to align the data) precede the bytes.
          header = bytes(whole[info.header_offset:info.header_offset + 30])
          if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise pickle.UnpicklingError(f"record {record!r} has no valid local header")
          start = info.header_offset + 30 + sum(struct.unpack("<HH", header[26:30]))
          raw = whole[start:start + numel * dt.itemsize]
        else:
          raw = np.frombuffer(zf.read(record), np.uint8)[:numel * dt.itemsize]
        if len(raw) != numel * dt.itemsize:
          raise pickle.UnpicklingError(f"record {record!r} is truncated")
        cache[key] = _Storage(key, dtype, numel, raw.view(dt))
      return cache[key]

    return _Unpickler(io.BytesIO(zf.read(pickles[0])), storage).load()


def _load_legacy(f, name, whole):
  """The legacy format from the open file `f`: parse once to learn the storages (no tensors are made), locate
  them after the pickle, parse again with them."""
  def no_storage(*_):
    raise pickle.UnpicklingError("a storage in the file's header")

  if _Unpickler(f, no_storage).load() != LEGACY_MAGIC:
    raise _NotLegacy()
  if _Unpickler(f, no_storage).load() != LEGACY_PROTOCOL:
    raise CheckpointError(f"{name} is a legacy torch file of an unknown protocol version; re-save it with a "
                          f"recent torch ({TORCH_EXTRA})")
  info = _Unpickler(f, no_storage).load()
  if isinstance(info, dict) and not info.get("little_endian", True):
    raise CheckpointError(f"{name} was written on a big-endian machine, which this reader does not support; "
                          f"re-save it on a little-endian one with torch ({TORCH_EXTRA})")
  start = f.tell()
  found = {}

  def record(key, dtype, numel):
    if found.setdefault(key, (dtype, numel)) != (dtype, numel):
      raise pickle.UnpicklingError(f"storage {key!r} is declared twice with different types or sizes")
    return _Storage(key, dtype, numel, None)

  _Unpickler(f, record).load()
  keys = _Unpickler(f, no_storage).load()
  if not isinstance(keys, list) or sorted(found) != sorted(keys):
    raise pickle.UnpicklingError("the storage key list does not match the storages the pickle uses")
  storages = {}
  for key in keys:  # each: int64 element count (little-endian), then the little-endian elements
    dtype, numel = found[key]
    dt = _dtype(dtype)
    count = f.read(8)
    if len(count) != 8 or struct.unpack("<q", count)[0] != numel:
      raise pickle.UnpicklingError(f"storage {key!r} is truncated or its size does not match")
    offset, nbytes = f.tell(), numel * dt.itemsize
    raw = whole[offset:offset + nbytes] if whole is not None else np.frombuffer(f.read(nbytes), np.uint8)
    if len(raw) != nbytes:
      raise pickle.UnpicklingError(f"storage {key!r} is truncated")
    f.seek(offset + nbytes)
    storages[key] = _Storage(key, dtype, numel, raw.view(dt))
  f.seek(start)
  return _Unpickler(f, lambda key, dtype, numel: storages[key]).load()


class _NotLegacy(Exception):
  pass


def load(path, *, name=None, mmap=True):
  """The object the torch.save file `path` holds, with each tensor a read-only NumPy array.

  Args:
    path: a file written by torch.save (zip format, or the legacy one).
    name: how messages refer to the file (default: the path), e.g. '--checkpoint=FILE'.
    mmap: map the file into memory, so that storages are read from disk only when used (else read now).

  Raises:
    CheckpointError: one line naming the file and the problem: not a torch file, a refused global (code this
      reader does not run), or a malformed / truncated file.
  """
  name = name or path
  try:
    if zipfile.is_zipfile(path):
      return _load_zip(path, name, mmap)
    with open(path, "rb") as f:
      head = f.read(4)
      if head == b"PK\x03\x04":  # A zip's first entry, but no directory at its end.
        raise CheckpointError(f"{name} is a truncated or damaged zip file (its central directory is missing); "
                              "download it again")
      if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # a pickle: legacy format?
        f.seek(0)
        try:
          return _load_legacy(f, name, _open_map(path, mmap))
        except _NotLegacy:
          pass
    if tarfile.is_tarfile(path):
      raise CheckpointError(f"{name} is a tar file (the format of torch < 0.4), which this reader does not "
                            f"read; re-save it with torch ({TORCH_EXTRA}): torch.save(torch.load(OLD), NEW)")
    raise CheckpointError(f"{name} is not a PyTorch checkpoint (neither the zip archive torch.save writes nor "
                          "its legacy format); pass an official .pth / .pth.tar / .pt file")
  except _Refused as e:
    raise CheckpointError(f"{name} is refused: its pickle needs {e}, which a checkpoint of tensors never does "
                          "(this reader runs no code from files); if you trust the file, load it with torch "
                          f"({TORCH_EXTRA}) and re-save only its state dicts") from None
  except CheckpointError:
    raise
  except OSError as e:
    raise CheckpointError(f"{name} cannot be read ({e.strerror or e}); check the path and its permissions") from None
  except Exception as e:  # pylint: disable=broad-except  (a malformed file of any kind: one line)
    lines = str(e).strip().splitlines()
    detail = f"{type(e).__name__}: {lines[0].strip()}" if lines else type(e).__name__
    raise CheckpointError(f"{name} is not a readable PyTorch checkpoint ({detail}); the file may be truncated "
                          "or corrupt: download it again") from None
