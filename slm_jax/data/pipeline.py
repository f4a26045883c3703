"""The training / validation input pipeline (grain): read, interleave, tokenise, mix, chunk, pack, shard, resume.

  per kind: this host's share of the records -> reshuffled each epoch -> Document -> docs/reference.md §4 pieces for
            (seed, epoch) -> ids                                    (MapDataset, random access)
  train:    kinds mixed per document with `weights`, in random order (exact proportions per block of 10,000)
  validation: kinds concatenated in order, unshuffled (SIMS: the concatenation of the validation sets)
  then:     chunks of seq_len, first-fit packing into [rows, seq_len] batches (slm_jax.data.packing)
            -> optional worker processes (grain mp_prefetch)

Batches are host-local numpy dicts of packing.BATCH_KEYS with rows = global_batch_size // process_count; the
iterator's get_state()/set_state() (or grain.checkpoint.CheckpointSave/Restore in an Orbax Composite, one per
process) resume exactly. Resuming needs the same sources, options, process count and num_workers.
"""
from __future__ import annotations

import hashlib
import sys

import grain
import numpy as np

from slm_jax import vocab
from slm_jax.data import interleave, records, tokenise
from slm_jax.data.packing import BATCH_KEYS, FixedCountIterDataset, PackIterDataset

__all__ = ["BATCH_KEYS", "SIMS_MIX_WEIGHTS", "count_tokens", "document_dataset", "make_dataset",
           "make_iterator"]

SIMS_MIX_WEIGHTS = {"text": 0.2024, "interleaved": 0.5433, "speech": 0.2543}  # docs/reference.md §3, per document
MIX_BLOCK = 10_000


def _seed32(*parts) -> int:
  return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=4).digest(), "little")


_M64 = (1 << 64) - 1


def _mix64(x: int) -> int:
  x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
  x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
  return x ^ (x >> 31)


def permute(index: int, n: int, seed: int, rounds: int = 4) -> int:
  """A seeded bijection of range(n) (Feistel network with cycle walking): O(1) memory, ~3 us per index."""
  if n <= 1:
    return index
  half = max(1, ((n - 1).bit_length() + 1) // 2)
  low = (1 << half) - 1
  keys = [_mix64(seed * 8 + r + 1) for r in range(rounds)]
  x = index
  while True:
    left, right = x >> half, x & low
    for k in keys:
      left, right = right, left ^ (_mix64(right ^ k) & low)
    x = (left << half) | right
    if x < n:
      return x


class DocumentDataset(grain.MapDataset):
  """One kind's documents for this host as {"ids", "source"}; index i is epoch i // n, record perm_epoch(i % n)."""

  def __init__(self, data_dir: str, split: str, kind: str, encoder: tokenise.DocumentTokenizer, *, seed: int,
               shuffle: bool, num_epochs: int | None, mode: str, host: tuple[int, int], source_index: int = 0,
               lam: float = interleave.LAMBDA, eta: float = interleave.ETA):
    super().__init__()
    manifest = records.read_manifest(data_dir)
    if manifest["kind"] != kind:
      raise ValueError(f"{data_dir} holds {manifest['kind']} documents, not {kind}")
    if manifest["num_units"] > encoder.layout.num_units:
      raise ValueError(f"{data_dir}: units up to {manifest['num_units']} but the vocabulary has "
                       f"{encoder.layout.num_units}")
    self._source = grain.sources.ArrayRecordDataSource(records.split_files(data_dir, split))
    total = len(self._source)
    index, count = host
    self._lo, hi = total * index // count, total * (index + 1) // count
    self._n = hi - self._lo
    self._kind, self._encoder, self._seed, self._shuffle = kind, encoder, seed, shuffle
    self._num_epochs, self._mode, self._lam, self._eta = num_epochs, mode, lam, eta
    self._shuffle_seed = _seed32(seed, kind, "shuffle")
    self._source_index = source_index
    self.data_dir = data_dir

  @property
  def kind(self) -> str:
    return self._kind

  def __len__(self) -> int:
    if self._n == 0:
      return 0
    return sys.maxsize if self._num_epochs is None else self._n * self._num_epochs

  def __str__(self) -> str:
    return f"DocumentDataset({self._kind}, {self._n} documents)"

  def record_index(self, index: int) -> tuple[int, int]:
    """(epoch, record index in the split) of element `index`."""
    epoch, pos = divmod(index, self._n)
    if self._shuffle:
      pos = permute(pos, self._n, self._shuffle_seed + (epoch << 32))
    return epoch, self._lo + pos

  def document(self, index: int) -> tuple[int, records.Document]:
    epoch, rec = self.record_index(index)
    return epoch, records.decode(self._source[rec])

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epoch, doc = self.document(index)
    ids = self._encoder.encode_document(doc, self._kind, self._seed, epoch, self._mode, self._lam, self._eta)
    return {"ids": ids, "source": np.int32(self._source_index)}


def apportion(weights: list[float], block: int) -> np.ndarray:
  """Integer counts summing to `block` in proportion to weights (largest remainder; positive weights get >= 1)."""
  w = np.asarray(weights, np.float64)
  if (w < 0).any() or w.sum() <= 0:
    raise ValueError(f"mixing weights must be non-negative with a positive sum, got {weights}")
  exact = w / w.sum() * block
  counts = np.floor(exact).astype(np.int64)
  counts[np.argsort(-(exact - counts), kind="stable")[:block - counts.sum()]] += 1
  counts[(w > 0) & (counts == 0)] = 1
  counts[np.argmax(counts)] -= counts.sum() - block
  return counts


class MixDataset(grain.MapDataset):
  """Per-document mixing: each block of `block` slots holds apportion(weights) slots per parent, in a seeded random
  order; slot -> (parent, index). Finite parents: runs until all are exhausted (missing slots are None)."""

  def __init__(self, parents: list[grain.MapDataset], weights: list[float], seed: int, block: int = MIX_BLOCK):
    super().__init__(parents)
    self._counts = apportion(weights, block)
    self._block, self._seed = block, seed
    lengths = [len(p) for p in parents]
    blocks = max(-(-n // int(c)) for n, c in zip(lengths, self._counts) if c)
    self._len = min(sys.maxsize, blocks * block)
    self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

  def __len__(self) -> int:
    return self._len

  def __str__(self) -> str:
    return f"MixDataset(counts={self._counts.tolist()} per {self._block})"

  def _order(self, b: int) -> tuple[np.ndarray, np.ndarray]:
    got = self._cache.get(b)
    if got is None:
      rng = np.random.Generator(np.random.PCG64([_seed32(self._seed, "mix"), b]))
      order = rng.permutation(np.repeat(np.arange(len(self._counts), dtype=np.int32), self._counts))
      rank = np.empty(self._block, np.int64)
      for k, c in enumerate(self._counts):
        rank[order == k] = np.arange(c)
      got = (order, rank)
      self._cache = {b: got}  # replaced wholesale: safe under grain's reader threads
    return got

  def slot(self, index: int) -> tuple[int, int]:
    b, j = divmod(index, self._block)
    order, rank = self._order(b)
    k = int(order[j])
    return k, b * int(self._counts[k]) + int(rank[j])

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    k, i = self.slot(index)
    return self._parents[k][i] if i < len(self._parents[k]) else None


def _host(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside 0..{process_count - 1}")
  return process_index, process_count


def document_dataset(sources: dict[str, str], weights: dict[str, float] | None, tokenizer, layout, *, split: str,
                     seed: int, interleave_mode: str = "per_epoch", num_epochs: int | None = None,
                     process_index: int | None = None, process_count: int | None = None,
                     shuffle: bool | None = None, add_bos: bool | None = None, add_eos: bool = False,
                     lam: float = interleave.LAMBDA,
                     eta: float = interleave.ETA) -> grain.MapDataset:
  """This host's stream of tokenised documents ({"ids", "source"}), before chunking and packing."""
  if split not in records.SPLITS:
    raise ValueError(f"split must be one of {records.SPLITS}, got {split!r}")
  if interleave_mode not in interleave.MODES:
    raise ValueError(f"interleave_mode must be one of {interleave.MODES}, got {interleave_mode!r}")
  unknown = set(sources) - set(records.KINDS)
  if unknown or not sources:
    raise ValueError(f"sources must map kinds {records.KINDS} to prepared folders, got {sorted(sources)}")
  train = split == "train"
  host = _host(process_index, process_count)
  encoder = tokenise.DocumentTokenizer(tokenizer, layout, add_bos, add_eos)
  kinds = [k for k in sources if not train or weights is None or weights.get(k, 0) > 0]
  if not kinds:
    raise ValueError(f"weights {weights} give no positive weight to the sources {sorted(sources)}")
  parts = [DocumentDataset(sources[k], split, k, encoder, seed=seed, shuffle=train if shuffle is None else shuffle,
                           num_epochs=num_epochs if num_epochs is not None or train else 1, mode=interleave_mode,
                           host=host, source_index=i, lam=lam, eta=eta) for i, k in enumerate(kinds)]
  parts = [p for p in parts if len(p)]
  if not parts:
    raise ValueError(f"no {split} documents for process {host[0]} of {host[1]} in {sources}")
  if not train:
    return grain.MapDataset.concatenate(parts) if len(parts) > 1 else parts[0]
  w = [1.0 if weights is None else float(weights[p.kind]) for p in parts]
  return MixDataset(parts, w, seed)


def make_dataset(sources, weights, tokenizer, layout, *, split: str, seq_len: int, global_batch_size: int,
                 seed: int, interleave_mode: str = "per_epoch", num_epochs: int | None = None,
                 process_index: int | None = None, process_count: int | None = None, num_workers: int = 0,
                 num_bins: int | None = None, read_threads: int = 0, num_batches: int | None = None,
                 **kw) -> grain.IterDataset:
  """The IterDataset behind `make_iterator` (same arguments)."""
  index, count = _host(process_index, process_count)
  if global_batch_size % count:
    raise ValueError(f"global_batch_size {global_batch_size} does not divide by process_count {count}")
  docs = document_dataset(sources, weights, tokenizer, layout, split=split, seed=seed,
                          interleave_mode=interleave_mode, num_epochs=num_epochs, process_index=index,
                          process_count=count, **kw)
  ds = docs.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=256))
  ds = PackIterDataset(ds, rows=global_batch_size // count, seq_len=seq_len, layout=layout, num_bins=num_bins)
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  if num_batches is not None:
    ds = FixedCountIterDataset(ds, num_batches=num_batches, rows=global_batch_size // count, seq_len=seq_len)
  return ds


def make_iterator(sources: dict[str, str], weights: dict[str, float] | None, tokenizer, layout: vocab.VocabLayout,
                  *, split: str, seq_len: int, global_batch_size: int, seed: int, interleave_mode: str = "per_epoch",
                  num_epochs: int | None = None, process_index: int | None = None, process_count: int | None = None,
                  num_workers: int = 0, **kw) -> grain.DatasetIterator:
  """Iterator of host-local packed batches (packing.BATCH_KEYS, each [global_batch_size // process_count, seq_len]).

  sources: kind ('text' | 'speech' | 'interleaved') -> prepared folder; weights: per-document sampling weights
  (SIMS_MIX_WEIGHTS; ignored for validation). split 'train' is infinite unless num_epochs is given (then every
  document of every source is seen num_epochs times); 'validation' is one unshuffled pass unless num_epochs says
  otherwise, its last batch padded with empty rows. Extra keyword arguments: shuffle, add_bos, add_eos, lam, eta, num_bins
  (rows packed per set, default max(rows, 64)), read_threads, num_batches (yield exactly this many batches,
  all-padding ones after the data ends: hosts' validation shares pack into different numbers of batches).
  """
  return iter(make_dataset(sources, weights, tokenizer, layout, split=split, seq_len=seq_len,
                           global_batch_size=global_batch_size, seed=seed, interleave_mode=interleave_mode,
                           num_epochs=num_epochs, process_index=process_index, process_count=process_count,
                           num_workers=num_workers, **kw))


def count_tokens(batch: dict) -> dict[str, int]:
  """Trained-on label tokens per kind: {'text', 'unit', 'marker'} (loss_mask-weighted counts of `kind`)."""
  mask = np.asarray(batch["loss_mask"]) > 0
  kind = np.asarray(batch["kind"])[mask]
  counts = np.bincount(kind.astype(np.int64), minlength=len(vocab.KIND_NAMES))
  return {name: int(counts[i]) for i, name in enumerate(vocab.KIND_NAMES)}

