"""The torch-free reader of torch.save files (jepa.torch_pickle), checked against torch itself.

Files are written by torch.save (zip archive and the legacy format) and read back without torch; every tensor
must equal `tensor.numpy()` exactly (bfloat16 after casting to float32 on both sides), views must keep their
offsets and strides, and tensors that shared a storage must share memory. Pickles that need anything but
tensors, dicts, lists and numbers (os.system, a model class, a state set on a foreign object) are refused
before anything is called. The hand-made files below need no torch; the rest skip without it.
"""
import io
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np
import pytest

from jepa import torch_pickle
from jepa.errors import CheckpointError

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:
  torch = None

needs_torch = pytest.mark.skipif(torch is None, reason='torch is not installed (pip install -e ".[torch]")')
FORMATS = ("zip", "legacy")


def _save(obj, path, fmt):
  torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")
  return str(path)


def _want(tensor):
  """What the reader must return for `tensor`, computed by torch: (float32 values for bf16, NumPy dtype)."""
  t = tensor.detach()
  if t.dtype == torch.bfloat16:
    return t.to(torch.float32).numpy(), np.dtype(ml_dtypes.bfloat16)
  return t.numpy(), t.numpy().dtype


def _assert_same(got, want, where="obj"):
  """`got` (the reader's) equals `want` (torch's objects): tensors exactly, containers recursively."""
  if torch.is_tensor(want):
    values, dtype = _want(want)
    assert isinstance(got, np.ndarray), (where, type(got))
    assert got.dtype == dtype and got.shape == tuple(want.shape), (where, got.dtype, got.shape)
    got = got.astype(np.float32) if dtype == ml_dtypes.bfloat16 else got
    np.testing.assert_array_equal(got, values, err_msg=where)
  elif isinstance(want, dict):
    assert isinstance(got, dict) and list(got) == list(want), (where, got.keys(), want.keys())
    assert type(got) is type(want), (where, type(got), type(want))  # OrderedDict stays OrderedDict
    for k in want:
      _assert_same(got[k], want[k], f"{where}[{k!r}]")
  elif isinstance(want, (list, tuple)):
    assert type(got) is type(want) and len(got) == len(want), (where, got)
    for i, (g, w) in enumerate(zip(got, want)):
      _assert_same(g, w, f"{where}[{i}]")
  else:
    assert got == want and type(got) is type(want), (where, got, want)


def _one_line(excinfo, *needles):
  message = str(excinfo.value)
  assert "\n" not in message, message
  for needle in needles:
    assert needle in message, message
  return message


# ------------------------------------------------------------------------------------------ against torch.save
@needs_torch
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_dtype_reads_back_exactly(fmt, tmp_path):
  g = torch.Generator().manual_seed(0)
  x = torch.randn(3, 5, generator=g) * 100
  tensors = {
      "float32": x, "float64": x.double(), "float16": x.half(), "bfloat16": x.bfloat16(),
      "int64": torch.randint(-2**40, 2**40, (4, 3), generator=g),
      "int32": torch.randint(-2**30, 2**30, (7,), dtype=torch.int32, generator=g),
      "int16": torch.arange(-5, 5, dtype=torch.int16), "int8": torch.arange(-3, 3, dtype=torch.int8),
      "uint8": torch.arange(250, 256, dtype=torch.uint8), "bool": x > 0,
      "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4),
      "nan_inf": torch.tensor([float("nan"), -float("inf")]),
  }
  got = torch_pickle.load(_save(tensors, tmp_path / "t.pth", fmt))
  _assert_same(got, tensors)
  # NaN != NaN, so assert_array_equal above compared positions; check the bits of the halves too.
  np.testing.assert_array_equal(got["float16"].view(np.uint16), tensors["float16"].numpy().view(np.uint16))
  np.testing.assert_array_equal(got["bfloat16"].view(np.uint16),
                                tensors["bfloat16"].view(torch.int16).numpy().view(np.uint16))
  assert not got["float32"].flags.writeable  # read-only views of the file


@needs_torch
@pytest.mark.parametrize("fmt", FORMATS)
def test_views_keep_offsets_and_strides_and_shared_storages_share_memory(fmt, tmp_path):
  base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
  other = torch.arange(6, dtype=torch.bfloat16) / 7
  tensors = {
      "base": base, "transposed": base.transpose(0, 2), "strided": base[1:, ::2, 1::3],
      "offset_row": base[2, 1], "column": base[:, :, 3], "expanded": base[0, 0, :1].expand(4, 6),
      "permuted_bf16": other.reshape(2, 3).t(), "bf16_tail": other[4:], "alone": torch.ones(2, 2),
  }
  assert not tensors["transposed"].is_contiguous() and tensors["strided"].storage_offset() > 0
  got = torch_pickle.load(_save(tensors, tmp_path / "v.pth", fmt))
  _assert_same(got, tensors)
  for name in ("transposed", "strided", "offset_row", "column", "expanded"):
    assert np.shares_memory(got[name], got["base"]), name
  assert np.shares_memory(got["permuted_bf16"], got["bf16_tail"])
  assert not np.shares_memory(got["alone"], got["base"])
  assert got["transposed"].strides == tuple(4 * s for s in tensors["transposed"].stride())


@needs_torch
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_training_checkpoint_reads_back_whole(fmt, tmp_path):
  """Nested state dicts (with torch's `_metadata`), an optimizer state, numbers, bytes, a Parameter."""
  torch.manual_seed(0)
  model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
  target = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2)).half()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
  model(torch.randn(3, 4)).sum().backward()
  opt.step()
  ckpt = {"encoder": model.state_dict(), "target_encoder": target.state_dict(),
          "predictor": {"module.w": torch.randn(2, 3).bfloat16()}, "opt": opt.state_dict(), "scaler": None,
          "epoch": 3, "loss": 0.25, "lr": 1e-3, "names": ("a", "b"), "blob": b"\x00\xffjepa", "big": 2**70,
          "flags": [True, None, -1.5], "param": torch.nn.Parameter(torch.randn(3))}
  got = torch_pickle.load(_save(ckpt, tmp_path / "c.pth.tar", fmt))
  want = dict(ckpt, param=ckpt["param"].detach())
  _assert_same(got, want)
  assert got["encoder"]._metadata == ckpt["encoder"]._metadata  # pylint: disable=protected-access


@needs_torch
def test_the_reader_matches_torch_load_on_the_reference_models(tmp_path):
  """The official layout of the parity tests (tests/torch_reference.py), read both ways."""
  from tests import torch_reference as ref  # pylint: disable=import-outside-toplevel
  encoder, target, predictor = ref.make_models("vjepa", image_size=16, patch=4, dim=32, depth=2, heads=2,
                                               pred_dim=16, pred_depth=1, pred_heads=2, num_frames=4)
  path = str(tmp_path / "vjepa.pth.tar")
  ref.save_official(path, "vjepa", encoder, target, predictor)
  _assert_same(torch_pickle.load(path), torch.load(path, weights_only=True))
  _assert_same(torch_pickle.load(path, mmap=False), torch.load(path, weights_only=True))


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


@needs_torch
@pytest.mark.parametrize("fmt", FORMATS)
def test_code_in_a_torch_file_is_refused(fmt, tmp_path):
  marker = tmp_path / "pwned"
  path = _save({"encoder": {"w": torch.ones(2)}, "hook": _Evil(marker)}, tmp_path / "evil.pth", fmt)
  with pytest.raises(CheckpointError) as e:
    torch_pickle.load(path, name="--checkpoint=evil.pth")
  _one_line(e, "--checkpoint=evil.pth is refused", f"{os.system.__module__}.system", 'pip install -e ".[torch]"')
  assert not marker.exists()

  path = _save({"encoder": torch.nn.Linear(2, 2)}, tmp_path / "module.pth", fmt)
  with pytest.raises(CheckpointError) as e:
    torch_pickle.load(path)
  _one_line(e, "is refused", "torch.nn.modules.linear.Linear")


@needs_torch
def test_a_torchscript_archive_is_named(tmp_path):
  path = str(tmp_path / "scripted.pt")
  torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
  with pytest.raises(CheckpointError) as e:
    torch_pickle.load(path)
  _one_line(e, "is a TorchScript archive (torch.jit.save), not a torch.save checkpoint")


# ------------------------------------------------------------------------------- hand-made files (no torch)
def _ops(*values):
  """Pickle opcodes that push `values` (primitives), without PROTO / STOP."""
  return b"".join(pickle.dumps(v, protocol=2)[2:-1] for v in values)


def _global(module, name):
  return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tensor_ops(key, numel, offset, size, stride, storage="FloatStorage"):
  """torch's pickling of one tensor: _rebuild_tensor_v2((storage id), offset, size, stride, False, {})."""
  pid = b"(" + _ops("storage") + _global("torch", storage) + _ops(key, "cpu", numel) + b"tQ"
  return (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + _ops(offset, size, stride, False)
          + _global("collections", "OrderedDict") + b")Rt" + b"R")


def _zip(path, pkl, records=None):
  """A torch-style archive: prefix/data.pkl and prefix/data/<key>."""
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
    zf.writestr("ckpt/data.pkl", pkl)
    zf.writestr("ckpt/byteorder", "little")
    for key, data in (records or {}).items():
      zf.writestr(f"ckpt/data/{key}", data)
  return str(path)


def test_a_hand_made_archive_reads_without_torch(tmp_path):
  data = np.arange(12, dtype=np.float32)
  pkl = (b"\x80\x02}(" + _ops("a") + _tensor_ops("0", 12, 1, (2, 3), (1, 4)) + _ops("epoch", 7)
         + b"u.")
  got = torch_pickle.load(_zip(tmp_path / "a.pth", pkl, {"0": data.tobytes()}))
  np.testing.assert_array_equal(got["a"], [[1, 5, 9], [2, 6, 10]])  # element [i, j] = data[1 + i + 4 j]
  assert got["epoch"] == 7


@pytest.mark.parametrize("fmt", ["zip", "plain pickle"])
def test_a_malicious_global_is_refused_before_it_runs(fmt, tmp_path):
  marker = tmp_path / "pwned"
  pkl = pickle.dumps({"encoder": _Evil(marker)}, protocol=2)
  assert b"system" in pkl
  path = _zip(tmp_path / "evil.pth", pkl) if fmt == "zip" else str(tmp_path / "evil.pkl")
  if fmt != "zip":
    with open(path, "wb") as f:
      f.write(pkl)
  with pytest.raises(CheckpointError) as e:
    torch_pickle.load(path)
  _one_line(e, "is refused", f"{os.system.__module__}.system", "runs no code")
  assert not marker.exists()


def test_other_constructs_are_refused(tmp_path):
  # BUILD (state set on an object) on anything but an OrderedDict: here a set.
  pkl = b"\x80\x02" + _global("__builtin__", "set") + b")R}" + _ops("x", 1) + b"s" + b"b."
  with pytest.raises(CheckpointError) as e:
    torch_pickle.load(_zip(tmp_path / "b.pth", pkl))
  _one_line(e, "is refused", "setting the state of a set")
  # builtins.eval / getattr, numpy's reconstructor: not allowed either.
  for module, name in (("builtins", "eval"), ("__builtin__", "getattr"),
                       ("numpy.core.multiarray", "_reconstruct")):
    pkl = b"\x80\x02" + _global(module, name) + b"(" + _ops("1") + b"tR."
    with pytest.raises(CheckpointError) as e:
      torch_pickle.load(_zip(tmp_path / f"{name}.pth", pkl))
    _one_line(e, "is refused")


def test_out_of_bounds_and_missing_storages_are_refused(tmp_path):
  data = np.arange(4, dtype=np.float32).tobytes()
  cases = {
      "past the end": (_tensor_ops("0", 4, 2, (3,), (1,)), {"0": data}, "past the storage's 4 elements"),
      "negative stride": (_tensor_ops("0", 4, 3, (2,), (-1,)), {"0": data}, "negative"),
      "no record": (_tensor_ops("1", 4, 0, (4,), (1,)), {"0": data}, "no record 'ckpt/data/1'"),
      "short record": (_tensor_ops("0", 8, 0, (8,), (1,)), {"0": data}, "fewer than"),
      "unknown storage type": (_tensor_ops("0", 4, 0, (4,), (1,), "QInt8Storage"), {"0": data}, "is refused"),
  }
  for what, (ops, records, needle) in cases.items():
    with pytest.raises(CheckpointError) as e:
      torch_pickle.load(_zip(tmp_path / f"{what}.pth", b"\x80\x02" + ops + b".", records))
    _one_line(e, needle)


def test_files_that_are_not_torch_checkpoints_get_one_line(tmp_path):
  cases = {"text.pth": b"hello world\n" * 10, "empty.pth": b"",
           "pickle.pth": pickle.dumps({"a": 1}, protocol=2)}
  for name, content in cases.items():
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError) as e:
      torch_pickle.load(str(tmp_path / name))
    _one_line(e, f"{tmp_path / name} is not a PyTorch checkpoint", "pass an official")
  buf = io.BytesIO()
  np.savez(buf, a=np.ones(3))
  (tmp_path / "arrays.npz").write_bytes(buf.getvalue())
  with pytest.raises(CheckpointError) as e:
    torch_pickle.load(str(tmp_path / "arrays.npz"))
  _one_line(e, "without the data.pkl", "a.npy")


@needs_torch
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_truncated_file_is_reported_whole(fmt, tmp_path):
  path = _save({"encoder": {"w": torch.randn(64, 64)}}, tmp_path / "t.pth", fmt)
  with open(path, "rb") as f:
    content = f.read()
  with open(path, "wb") as f:
    f.write(content[:len(content) * 2 // 3])
  with pytest.raises(CheckpointError) as e:
    torch_pickle.load(path, name="--checkpoint=t.pth")
  message = _one_line(e, "--checkpoint=t.pth")
  assert message.endswith(("again", "file")), message  # the whole sentence, with its fix
