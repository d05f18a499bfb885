"""grain input pipelines: an infinite, checkpointable training iterator and finite, padded eval batches.

Training (:func:`make_train_iterator`)::

  MapDataset.source(source) -> seed(seed) -> shuffle() -> repeat()  # global order, reshuffled per epoch
    -> random_map(example_fn)                                         # per-element rng: (seed, position)
    -> [process_index::process_count]                                 # this process's slice (lazy)
    -> batch(batch_size, drop_remainder=True)
    -> to_iter_dataset(ReadOptions(num_threads, prefetch))            # reader threads + prefetch

``random_map`` sits *before* the per-process slice, so the generator an example gets depends on its position
in the global stream, not on how many processes read it: global batch k is the union over processes of their
batch k, and it is the same examples with the same augmentations and masks whatever ``process_count`` is.
The slice is lazy (a MapDataset index map), so each process still decodes only its own examples.

The iterator's state (``it.get_state()`` / ``it.set_state(state)``, or ``grain.checkpoint.CheckpointSave`` /
``CheckpointRestore`` inside an orbax ``Composite``) is a position in that stream: restoring it resumes on
exactly the next batch.

Evaluation (:func:`eval_batches`) walks a source once, in order, with a deterministic rng per example,
padding the last batch and marking real examples with a boolean ``'mask'`` so that shapes stay static.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import grain
import numpy as np

from jepa.data import sources
from jepa.errors import DataError

Example = dict[str, Any]
ExampleFn = Callable[[Example, np.random.Generator], Example]

MAX_CONSECUTIVE_CORRUPT = sources.MAX_CONSECUTIVE_CORRUPT


class SkipCorrupt(sources.SkipsCorrupt):
  """A source wrapper that replaces examples whose read raises :class:`DataError` by the next readable one.

  ``wrapper[i]`` returns ``source[i]``, or if that raises DataError, ``source[i + 1]``, ``source[i + 2]``, ...
  (modulo ``len``): a deterministic substitute, so the stream stays reproducible. Each substitution is counted
  and the first few are logged with the error message.

  Counting: :attr:`num_skipped` is the number of corrupt reads *in this process* (a lock makes it exact under
  grain's reader threads). It counts reads, not distinct files, so a corrupt example read in several epochs
  counts each time, and prefetching may count an example before its batch is consumed. The iterator returned
  by :func:`make_train_iterator` exposes this wrapper as ``it.corrupt``, so a training loop can log
  ``it.corrupt.num_skipped`` and ``it.corrupt.skipped_indices`` (the distinct source indices seen corrupt).
  Sources from :func:`jepa.data.sources.get_source` with ``data.skip_corrupt`` already skip (and count) this
  way, for evaluation too; :func:`make_train_iterator` then uses them as they are.
  """

  def __init__(self, source: Any, max_logged: int = 10):
    self.source = source
    self.name = source.name
    self.num_classes = source.num_classes
    self.max_logged = max_logged
    self._init_counters()

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> Example:
    return self._read_skipping(self.source.__getitem__, len(self.source), index)


def make_train_iterator(source: Any, example_fn: ExampleFn, *, batch_size: int, seed: int,
                        process_index: int = 0, process_count: int = 1, num_threads: int = 2,
                        prefetch: int = 2, skip_corrupt: bool = False,
                        num_workers: int = 0) -> grain.DatasetIterator:
  """Builds the infinite training iterator for this process.

  Args:
    source: a random-access source (``len``, ``__getitem__``; see jepa.data.sources).
    example_fn: ``example_fn(example, rng) -> dict of NumPy arrays / scalars`` (decode-side transform:
      augmentations, masks). ``rng`` is the per-element generator grain derives from (seed, global position in
      the shuffled stream); use it for all randomness and do not keep it.
    batch_size: the per-process batch size (global batch = batch_size * process_count).
    seed: the data seed: shuffling (reshuffled each epoch) and per-element randomness.
    process_index: this process's index in [0, process_count).
    process_count: number of processes that share the stream (each reads a disjoint slice).
    num_threads: reader threads (``grain.ReadOptions.num_threads``).
    prefetch: batches read ahead by the reader threads (``ReadOptions.prefetch_buffer_size``).
    skip_corrupt: replace examples whose read raises DataError with the next readable one (see
      :class:`SkipCorrupt`); the wrapper is exposed as ``it.corrupt``. Without it the DataError propagates.
    num_workers: worker processes (``grain.MultiprocessingOptions``, ``mp_prefetch``) that run the reads and
      ``example_fn`` outside this process's GIL; 0 = reader threads only. The stream is the same for any
      count (each element's rng depends on its position only), and the iterator state still resumes exactly.
      With workers, substitutions of ``skip_corrupt`` happen (and are counted) in the workers, so
      ``it.corrupt`` counts only this process's reads.

  Returns:
    A ``grain.DatasetIterator`` yielding dicts of stacked arrays with leading axis ``batch_size``; it supports
    ``get_state`` / ``set_state`` and grain's orbax checkpoint handlers.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} not in [0, process_count={process_count})")
  if len(source) == 0:
    raise DataError(f'{getattr(source, "name", "source")} has no examples; check the data config')
  if getattr(source, "skip_corrupt", False):  # get_source(data.skip_corrupt=True): it skips and counts itself.
    corrupt = source
  else:
    corrupt = SkipCorrupt(source) if skip_corrupt else None
  ds = grain.MapDataset.source(corrupt if corrupt is not None else source)
  ds = ds.seed(seed).shuffle().repeat()
  ds = ds.random_map(_CallExampleFn(example_fn))
  if process_count > 1:
    ds = ds[process_index::process_count]
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
  if num_workers:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (their defaults do), e.g. under pytest.
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=prefetch))
  it = iter(ds)
  it.corrupt = corrupt  # None without skip_corrupt; see SkipCorrupt for the counters.
  return it


class _CallExampleFn:
  """Picklable adapter (grain may ship transforms to worker processes) that also copies the input dict.

  The copy keeps example_fn from mutating a dict a source might cache and return again.
  """

  def __init__(self, fn: ExampleFn):
    self.fn = fn

  def __call__(self, example: Example, rng: np.random.Generator) -> Example:
    return self.fn(dict(example), rng)


def _eval_rng(seed: int, index: int) -> np.random.Generator:
  # Keyed on the example's index in the source, so eval views do not depend on batch size or process count.
  return np.random.default_rng([seed, index])


def eval_batches(source: Any, example_fn: ExampleFn, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1, seed: int = 0, num_threads: int = 2) -> Iterator[Example]:
  """Yields this process's eval batches: every example once, in order, padded to static shapes.

  Process ``p`` reads examples ``p, p + process_count, ...``. Every process yields the same number of
  batches, ``ceil(ceil(len / process_count) / batch_size)`` (collectives in a multi-process eval step need
  that); the tail is padded with copies of a real example and the boolean ``'mask'`` [batch_size] key is True
  exactly for real examples. ``example_fn`` receives ``np.random.default_rng([seed, source_index])``.

  Args:
    source: a random-access source.
    example_fn: ``example_fn(example, rng) -> dict of arrays``; usually deterministic for eval.
    batch_size: per-process batch size.
    process_index: this process's index.
    process_count: number of processes.
    seed: seeds the per-example generators.
    num_threads: reader threads used to decode and transform ahead of the consumer.

  Yields:
    Dicts of stacked arrays, leading axis ``batch_size``, plus ``'mask'``.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} not in [0, process_count={process_count})")
  n = len(source)
  if n == 0:
    return
  per_process = -(-n // process_count)
  num_batches = -(-per_process // batch_size)
  mine = list(range(process_index, n, process_count))
  # Padding slots repeat a real example (this process's first, or example 0 if it has none): identical
  # shapes and finite values, masked out of every metric.
  pad_index = mine[0] if mine else 0
  indices = mine + [pad_index] * (num_batches * batch_size - len(mine))
  real = np.arange(len(indices)) < len(mine)

  def load(i: int) -> Example:
    out = dict(example_fn(dict(source[indices[i]]), _eval_rng(seed, indices[i])))
    out["mask"] = np.bool_(real[i])
    return out

  ds = grain.MapDataset.range(len(indices)).map(load).batch(batch_size, drop_remainder=False)
  read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2)
  yield from ds.to_iter_dataset(read)
  _report_replaced(source)


def _skipping_readers(source: Any) -> list[Any]:
  """The skip_corrupt readers (SkipCorrupt, Subset(skip_corrupt=True)) in `source`'s chain of wrappers."""
  found, seen = [], set()
  while source is not None and id(source) not in seen:
    seen.add(id(source))
    if isinstance(source, sources.SkipsCorrupt) and (isinstance(source, SkipCorrupt) or source.skip_corrupt):
      found.append(source)
    source = getattr(source, "source", None)
  return found


def _report_replaced(source: Any) -> None:
  """Says (once per example) which unreadable examples data.skip_corrupt replaced in an evaluation pass: the
  features of the next readable example (with its label) stand in for them, in every pass alike."""
  for reader in _skipping_readers(source):
    with reader._lock:  # pylint: disable=protected-access
      new = sorted(reader.skipped_indices - reader.reported)
      reader.reported.update(new)
      total = len(reader.skipped_indices)
    if new:
      shown = ", ".join(str(i) for i in new[:5]) + (", ..." if len(new) > 5 else "")
      where = f'position{"s" if len(new) > 1 else ""} {shown}'
      print(f"WARNING: data.skip_corrupt: {len(new)} unreadable example(s) of {reader.name} ({where}) "
            f"replaced by the next readable one in evaluation ({total} in all so far)", flush=True)
