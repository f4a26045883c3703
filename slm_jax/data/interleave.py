"""Word-level speech-text interleaving (docs/reference.md §4, SIMS "poisson"): pure functions of (document, seed, epoch).

A document's pattern is drawn from an RNG seeded by (seed, epoch, doc_key); mode "static" always uses epoch 0
(one pattern per document, as slamkit), mode "per_epoch" draws a new, still deterministic, pattern each epoch.
"""
from __future__ import annotations

import hashlib
import math
import threading
from typing import Sequence

import numpy as np

from slm_jax import vocab
from slm_jax.frames import FRAME_S, unit_end_times  # noqa: F401 (FRAME_S re-exported)

LAMBDA, ETA = 10.0, 0.3
MODES = ("static", "per_epoch")

Piece = tuple  # ("text", str) | ("units", int array) | ("marker", "speech" | "text")


def doc_key(doc_id: str) -> int:
  """A stable 64-bit key of a document id (independent of record order and of the Python hash seed)."""
  return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


_LOCAL = threading.local()
_DRAWS = 16  # random numbers drawn per refill


def pattern_rng(seed: int, epoch: int, key: int, mode: str = "per_epoch") -> np.random.Generator:
  """The RNG of one document's pattern: PCG64 whose 128-bit state is a hash of (seed, epoch, key); `static`
  ignores the epoch. (Setting the state costs ~3 us, seeding through SeedSequence ~15 us.)"""
  if mode not in MODES:
    raise ValueError(f"interleave mode must be one of {MODES}, got {mode!r}")
  epoch = int(epoch) if mode == "per_epoch" else 0
  digest = hashlib.blake2b(f"{int(seed)}/{epoch}/{int(key)}".encode(), digest_size=16, person=b"slminterleave").digest()
  gen = getattr(_LOCAL, "gen", None)
  if gen is None:
    gen = _LOCAL.gen = np.random.Generator(np.random.PCG64(0))
  gen.bit_generator.state = {"bit_generator": "PCG64", "has_uint32": 0, "uinteger": 0,
                             "state": {"state": int.from_bytes(digest, "little"), "inc": _PCG_INC}}
  return gen


_PCG_INC = 0xDA3E39CB94B95BDB_A5E4E0A5D5C3B8F1 | 1


def select_spans(n: int, rng: np.random.Generator, lam: float = LAMBDA, eta: float = ETA,
                 trace: list | None = None) -> np.ndarray:
  """bool [n]: which words are spoken (docs/reference.md §4 step 1).

  Each draw takes a start uniformly from the eligible indices (floor(u * count) with u ~ U[0, 1)) and a length
  L ~ Poisson(lam); both are drawn from `rng` in blocks of _DRAWS. `trace` collects (start, L, accepted).
  """
  target = math.ceil(eta * n)
  mask = np.zeros(n, bool)
  eligible = np.ones(n, bool)
  selected, draw = 0, _DRAWS
  while selected < target:
    candidates = np.flatnonzero(eligible)
    if candidates.size == 0:
      break
    if draw == _DRAWS:
      uniform, lengths, draw = rng.random(_DRAWS), rng.poisson(lam, _DRAWS), 0
    start = int(candidates[int(uniform[draw] * candidates.size)])
    end = min(start + int(lengths[draw]), n)
    draw += 1
    if mask[start:end].any():
      if trace is not None:
        trace.append((start, int(lengths[draw - 1]), False))
      continue
    if trace is not None:
      trace.append((start, int(lengths[draw - 1]), True))
    mask[start:end] = True
    selected += end - start
    eligible[start:end] = False
    if end < n:
      eligible[end] = False
  return mask


def build_pieces(text: str, word_offsets: np.ndarray, word_starts: np.ndarray, word_ends: np.ndarray,
                 units: np.ndarray, durations: np.ndarray, spoken: np.ndarray) -> list[Piece]:
  """The docs/reference.md §4 sequence for a given pattern (step 2), as pieces.

  text: the words concatenated (each word with its own leading space); word_offsets: end offset of each word in
  `text`; spoken: bool per word. Each run of one modality is preceded by its marker; a spoken run over words
  [a..b] takes the units whose end time t satisfies start(a) <= t <= end(b).
  """
  n = len(word_offsets)
  if n == 0:
    return []
  spoken = np.asarray(spoken, bool)
  edges = np.flatnonzero(spoken[1:] != spoken[:-1]) + 1
  run_first = np.concatenate([[0], edges])
  run_last = np.concatenate([edges, [n]]) - 1
  run_spoken = spoken[run_first]
  char_start = np.concatenate([[0], word_offsets[:-1]])
  times = unit_end_times(durations)
  lo = np.searchsorted(times, word_starts[run_first], side="left")
  hi = np.searchsorted(times, word_ends[run_last], side="right")
  pieces: list[Piece] = []
  for r in range(len(run_first)):
    if run_spoken[r]:
      pieces.append(("marker", "speech"))
      pieces.append(("units", units[lo[r]:hi[r]]))
    else:
      pieces.append(("marker", "text"))
      pieces.append(("text", text[char_start[run_first[r]]:word_offsets[run_last[r]]]))
  return pieces


def interleave(doc, seed: int, epoch: int = 0, mode: str = "per_epoch", lam: float = LAMBDA,
               eta: float = ETA) -> list[Piece]:
  """Pieces of an aligned document (slm_jax.data.records.Document) for (seed, epoch)."""
  rng = pattern_rng(seed, epoch, doc_key(doc.doc_id), mode)
  spoken = select_spans(len(doc.word_offsets), rng, lam, eta)
  return build_pieces(doc.text, doc.word_offsets, doc.word_starts, doc.word_ends, doc.units, doc.durations,
                      spoken)


def pieces_to_string(pieces: Sequence[Piece]) -> str:
  """docs/reference.md §4 string form (`<text> The cat<speech><Un12>...`) of pieces."""
  out = []
  for kind, value in pieces:
    if kind == "text":
      out.append(value)
    elif kind == "units":
      out.append(vocab.units_to_string(value))
    elif kind == "marker":
      out.append(vocab.SPEECH_MARKER if value == "speech" else vocab.TEXT_MARKER)
    else:
      raise ValueError(f"unknown piece kind {kind!r}")
  return "".join(out)
