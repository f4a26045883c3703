"""A deterministic in-memory batch iterator with the data pipeline's interface (tests, benchmarks, smoke runs).

Rows are packed documents of a learnable pattern (an arithmetic progression of text, unit or marker ids),
built exactly like the real pipeline's batches: positions restart per document, segment ids >= 1, padding
segment 0, the last token of each document (whose next token is another document) is not a target.
Batch i is a pure function of (seed, i, global row), so `get_state` / `set_state` resume exactly and every
process produces its own rows of the same global batch. The state is bytes, so
`grain.checkpoint.CheckpointSave` stores it like a DataLoader iterator's.
"""
from __future__ import annotations

import json

import numpy as np

from slm_jax.vocab import VocabLayout


def make_row(rng: np.random.Generator, seq_len: int, layout: VocabLayout, min_doc: int = 4) -> dict:
  ids = np.zeros(seq_len, np.int32)
  targets = np.zeros(seq_len, np.int32)
  mask = np.zeros(seq_len, np.float32)
  seg = np.zeros(seq_len, np.int32)
  pos = np.zeros(seq_len, np.int32)
  t, doc = 0, 1
  text_span = max(layout.base_size - 1, 1)
  while t < seq_len - 1:
    n = int(rng.integers(min_doc, max(min_doc + 1, seq_len // 2)))
    n = min(n, seq_len - t)
    start, stride = int(rng.integers(0, 1 << 16)), int(rng.integers(1, 4))
    if layout.num_units and rng.random() < 0.5:  # <speech> units <text> text (an interleaved document)
      half = max((n - 2) // 2, 0)
      units = layout.unit_offset + (start + stride * np.arange(half)) % layout.num_units
      text = 1 + (start + stride * np.arange(n - 2 - half)) % text_span
      tokens = np.concatenate([[layout.speech_id], units, [layout.text_id], text])[:n]
    else:
      tokens = 1 + (start + stride * np.arange(n)) % text_span
    tokens = tokens.astype(np.int32)
    ids[t:t + n] = tokens
    targets[t:t + n - 1] = tokens[1:]
    mask[t:t + n - 1] = 1.0
    seg[t:t + n] = doc
    pos[t:t + n] = np.arange(n)
    t += n
    doc += 1
  return {"input_ids": ids, "targets": targets, "loss_mask": mask, "segment_ids": seg, "positions": pos,
          "kind": layout.kinds(targets).astype(np.int8)}


class SyntheticIterator:
  """Host-local batches [global_batch_size / process_count, seq_len] of the batch convention."""

  def __init__(self, layout: VocabLayout, *, seq_len: int, global_batch_size: int, seed: int = 0,
               process_index: int = 0, process_count: int = 1, split: str = "train"):
    if global_batch_size % process_count:
      raise ValueError(f"global_batch_size {global_batch_size} does not divide by {process_count} processes")
    self.layout, self.seq_len, self.global_batch_size = layout, seq_len, global_batch_size
    self.seed = seed + (0 if split == "train" else 7919)
    self.local = global_batch_size // process_count
    self.first_row = process_index * self.local
    self.index = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    rows = [make_row(np.random.default_rng([self.seed, self.index, self.first_row + r]), self.seq_len,
                     self.layout) for r in range(self.local)]
    self.index += 1
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

  def get_state(self) -> bytes:
    return json.dumps({"index": self.index, "seed": self.seed}).encode()

  def set_state(self, state) -> None:
    d = json.loads(state.decode() if isinstance(state, bytes) else state)
    if d["seed"] != self.seed:
      raise ValueError(f"synthetic iterator state has seed {d['seed']}, this iterator uses {self.seed}")
    self.index = int(d["index"])

  def start_prefetch(self) -> None:  # grain's checkpoint handler calls it after restore
    pass
