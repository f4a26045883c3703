"""Documents -> token ids with the extended vocabulary (docs/reference.md §2-§4), fast enough for the input pipeline.

Text goes through the model's HF tokenizer (one batched call per document into its Rust backend), units and
markers map by id; BOS is prepended when the base model adds one. The ids equal `slm_jax.vocab.Encoder` (and
the HF tokenizer with the added tokens) on the document's docs/reference.md §4 string.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from slm_jax import vocab
from slm_jax.data import interleave, records


def document_pieces(doc: records.Document, kind: str, seed: int = 0, epoch: int = 0, mode: str = "per_epoch",
                    lam: float = interleave.LAMBDA, eta: float = interleave.ETA) -> list:
  """The docs/reference.md §4 pieces of one document of a given kind (text / speech / interleaved)."""
  if kind == "text":
    return [("text", doc.text)]
  if kind == "speech":
    return [("units", doc.units)]
  if kind != "interleaved":
    raise ValueError(f"unknown document kind {kind!r}")
  if doc.num_words:
    return interleave.interleave(doc, seed, epoch, mode, lam, eta)
  return vocab.parse_string(doc.text)  # a ready string from slamkit tokens JSONL


class DocumentTokenizer:
  """Pieces -> int32 ids; `encode_pieces` agrees with vocab.Encoder.encode_pieces."""

  def __init__(self, tokenizer, layout: vocab.VocabLayout, add_bos: bool | None = None, add_eos: bool = False):
    self.tokenizer = tokenizer
    self.layout = layout
    self.add_bos = (layout.bos_id is not None if add_bos is None else add_bos) and layout.bos_id is not None
    if add_eos and layout.eos_id is None:
      raise ValueError("add_eos=True needs a layout with an eos_id")
    self.add_eos = add_eos  # SLAM speech-only sequences are [<S>, units..., <S>] (docs/reference.md §2)
    backend = getattr(tokenizer, "_tokenizer", None)  # tokenizers.Tokenizer of a fast HF tokenizer
    self._batch = None
    if backend is not None:
      self._batch = getattr(backend, "encode_batch_fast", None) or backend.encode_batch

  def text_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
    if not texts:
      return []
    if self._batch is not None:
      return [np.asarray(e.ids, np.int32) for e in self._batch(list(texts), add_special_tokens=False)]
    return [np.asarray(self.tokenizer.encode(t, add_special_tokens=False), np.int32) for t in texts]

  def encode_pieces(self, pieces: Sequence[tuple]) -> np.ndarray:
    texts = [v for k, v in pieces if k == "text"]
    text_ids = iter(self.text_ids(texts))
    parts = [np.asarray([self.layout.bos_id], np.int32)] if self.add_bos else []
    off = self.layout.unit_offset
    for kind, value in pieces:
      if kind == "text":
        parts.append(next(text_ids))
      elif kind == "units":
        parts.append(np.asarray(value, np.int32) + off)
      elif kind == "marker":
        parts.append(np.asarray([self.layout.marker_id(value)], np.int32))
      else:
        raise ValueError(f"unknown piece kind {kind!r}")
    if self.add_eos:
      parts.append(np.asarray([self.layout.eos_id], np.int32))
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)

  def encode_document(self, doc: records.Document, kind: str, seed: int = 0, epoch: int = 0,
                      mode: str = "per_epoch", lam: float = interleave.LAMBDA,
                      eta: float = interleave.ETA) -> np.ndarray:
    return self.encode_pieces(document_pieces(doc, kind, seed, epoch, mode, lam, eta))


def document_strings(data_dir: str, *, split: str = "train", num: int = 10, start: int = 0, seed: int = 0,
                     epoch: int = 0, mode: str = "per_epoch"):
  """Yields the docs/reference.md §4 strings of records [start, start + num) of a prepared folder (in stored order)."""
  import grain
  kind = records.read_manifest(data_dir)["kind"]
  source = grain.sources.ArrayRecordDataSource(records.split_files(data_dir, split))
  for i in range(start, min(start + num, len(source))):
    doc = records.decode(source[i])
    yield interleave.pieces_to_string(document_pieces(doc, kind, seed, epoch, mode))
