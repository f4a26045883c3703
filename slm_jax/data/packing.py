"""Chunking and packing of token documents into fixed [rows, seq_len] training batches (docs/reference.md §3, §5).

Each document is cut into consecutive chunks of `seq_len` tokens (the remainder kept as a shorter chunk); each
chunk is one packed segment: `positions` restart at 0, `segment_ids` count from 1 within a row (0 = padding),
and `loss_mask` is 1 where the next token belongs to the same segment, so the first token of a chunk is never a
target and padding is masked by the mask, never by token id. Chunks go first-fit into a set of `num_bins` rows;
the set is emitted `rows` rows at a time once a chunk fits nowhere (or the input ends).

Exact resume: the state is the parent's state before the document that opened the current set, the chunk index
in it, and the number of batches of the set already emitted; restoring rebuilds that set and skips them.
"""
from __future__ import annotations

import grain
import numpy as np

from slm_jax import vocab

BATCH_KEYS = ("input_ids", "targets", "loss_mask", "segment_ids", "positions", "kind")


class _Bins:
  """num_bins rows being filled first-fit."""

  def __init__(self, num_bins: int, seq_len: int):
    self.ids = np.zeros((num_bins, seq_len), np.int32)
    self.seg = np.zeros((num_bins, seq_len), np.int32)
    self.pos = np.zeros((num_bins, seq_len), np.int32)
    self.fill = np.zeros(num_bins, np.int64)
    self.nseg = np.zeros(num_bins, np.int32)
    self.seq_len = seq_len
    self._arange = np.arange(seq_len, dtype=np.int32)

  def add(self, chunk: np.ndarray) -> bool:
    n = len(chunk)
    fits = self.fill <= self.seq_len - n
    b = int(np.argmax(fits))
    if not fits[b]:
      return False
    start = self.fill[b]
    self.ids[b, start:start + n] = chunk
    self.nseg[b] += 1
    self.seg[b, start:start + n] = self.nseg[b]
    self.pos[b, start:start + n] = self._arange[:n]
    self.fill[b] += n
    return True

  def batches(self, rows: int, layout: vocab.VocabLayout) -> list[dict]:
    used = int(np.count_nonzero(self.fill))  # first-fit fills bins in order: used bins come first
    if used == 0:
      return []
    keep = -(-used // rows) * rows  # empty rows pad the last batch
    ids, seg, pos = self.ids[:keep], self.seg[:keep], self.pos[:keep]
    mask = np.zeros_like(seg, dtype=bool)
    mask[:, :-1] = (seg[:, 1:] == seg[:, :-1]) & (seg[:, :-1] > 0)
    targets = np.zeros_like(ids)
    targets[:, :-1] = ids[:, 1:]
    targets[~mask] = 0
    kind = layout.kinds(targets)
    kind[~mask] = vocab.KIND_TEXT
    full = {"input_ids": ids, "targets": targets, "loss_mask": mask.astype(np.float32), "segment_ids": seg,
            "positions": pos, "kind": kind}
    return [{k: v[i:i + rows] for k, v in full.items()} for i in range(0, keep, rows)]


class _PackIterator(grain.DatasetIterator):

  def __init__(self, parent, rows: int, seq_len: int, num_bins: int, layout: vocab.VocabLayout):
    super().__init__(parent)
    self._rows, self._seq_len, self._num_bins, self._layout = rows, seq_len, num_bins, layout
    self._reset({"parent": self._parent.get_state(), "chunk": 0, "emitted": 0})

  def _reset(self, state: dict) -> None:
    self._anchor = (state["parent"], int(state["chunk"]))
    self._emitted = int(state["emitted"])
    self._ready: list[dict] = []
    self._carry = None  # (ids, chunk index, parent state before that document) opening the next set
    self._exhausted = False
    self._restoring = True

  def _chunks(self, ids: np.ndarray, start: int):
    for c in range(start, -(-len(ids) // self._seq_len)):
      yield c, ids[c * self._seq_len:(c + 1) * self._seq_len]

  def _build(self) -> None:
    """Fills one set of bins starting at the anchor; leaves the overflowing chunk in `_carry`."""
    bins = _Bins(self._num_bins, self._seq_len)
    carry, first_chunk = self._carry, 0
    if carry is None:
      first_chunk = self._anchor[1]
      if self._restoring:
        self._parent.set_state(self._anchor[0])
    while True:
      if carry is not None:
        ids, start, before = carry
        carry = None
      else:
        before = self._parent.get_state()
        try:
          ids = next(self._parent)["ids"]
        except StopIteration:
          self._exhausted = True
          self._carry = None
          self._next_anchor = (before, 0)
          break
        start, first_chunk = first_chunk, 0
      overflow = None
      for c, chunk in self._chunks(ids, start):
        if not bins.add(chunk):
          overflow = (ids, c, before)
          break
      if overflow is not None:
        self._carry = overflow
        self._next_anchor = (overflow[2], overflow[1])
        break
    self._restoring = False
    self._ready = bins.batches(self._rows, self._layout)

  def __next__(self) -> dict:
    if not self._ready:
      if self._exhausted:
        raise StopIteration
      skip, self._emitted = self._emitted, 0
      self._build()
      del self._ready[:skip]
      self._emitted = skip
      if not self._ready:
        raise StopIteration
    self._emitted += 1
    batch = self._ready.pop(0)
    if not self._ready:
      self._anchor, self._emitted = self._next_anchor, 0
    return batch

  def get_state(self) -> dict:
    return {"parent": self._anchor[0], "chunk": self._anchor[1], "emitted": self._emitted}

  def set_state(self, state: dict) -> None:
    self._reset(state)


class PackIterDataset(grain.IterDataset):
  """Documents ({"ids": int32 [n]}) -> packed batches of BATCH_KEYS, each [rows, seq_len]."""

  def __init__(self, parent: grain.IterDataset, *, rows: int, seq_len: int, layout: vocab.VocabLayout,
               num_bins: int | None = None):
    super().__init__(parent)
    num_bins = num_bins or max(rows, 64)
    self._num_bins = -(-num_bins // rows) * rows
    self._rows, self._seq_len, self._layout = rows, seq_len, layout

  def __iter__(self) -> _PackIterator:
    return _PackIterator(self._parent.__iter__(), self._rows, self._seq_len, self._num_bins, self._layout)

  def __str__(self) -> str:
    return f"PackIterDataset(rows={self._rows}, seq_len={self._seq_len}, num_bins={self._num_bins})"


def empty_batch(rows: int, seq_len: int) -> dict:
  """An all-padding batch (loss_mask 0 everywhere)."""
  dtypes = {"input_ids": np.int32, "targets": np.int32, "loss_mask": np.float32, "segment_ids": np.int32,
            "positions": np.int32, "kind": np.int8}
  return {k: np.zeros((rows, seq_len), dtypes[k]) for k in BATCH_KEYS}


class _FixedCountIterator(grain.DatasetIterator):

  def __init__(self, parent, num_batches: int, rows: int, seq_len: int):
    super().__init__(parent)
    self._num_batches, self._rows, self._seq_len = num_batches, rows, seq_len
    self._count, self._exhausted = 0, False

  def __next__(self) -> dict:
    if self._count >= self._num_batches:
      raise StopIteration
    batch = None
    if not self._exhausted:
      try:
        batch = next(self._parent)
      except StopIteration:
        self._exhausted = True
    self._count += 1
    return batch if batch is not None else empty_batch(self._rows, self._seq_len)

  def get_state(self) -> dict:
    return {"parent": self._parent.get_state(), "count": self._count, "exhausted": self._exhausted}

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state["parent"])
    self._count, self._exhausted = int(state["count"]), bool(state["exhausted"])


class FixedCountIterDataset(grain.IterDataset):
  """Exactly `num_batches` batches: truncated, or padded with all-padding batches once the parent ends (so that
  every host of a multi-host validation pass runs the same number of steps)."""

  def __init__(self, parent: grain.IterDataset, *, num_batches: int, rows: int, seq_len: int):
    super().__init__(parent)
    self._num_batches, self._rows, self._seq_len = num_batches, rows, seq_len

  def __iter__(self) -> _FixedCountIterator:
    return _FixedCountIterator(self._parent.__iter__(), self._num_batches, self._rows, self._seq_len)
