"""Sequence scoring (docs/reference.md §6): mean (or summed) log-probability per target token, batched by length buckets.

The first token of a sequence is context only; padding is excluded; the logits of another modality may be
banned before the softmax. Sequences are sorted by length and padded to a few bucket lengths chosen to waste
as little compute as possible; each bucket compiles once and its batch is sharded over ('data', 'fsdp').
All log-probability math is `slm_jax.model.logprobs.token_logprobs`.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from slm_jax import console, sharding
from slm_jax.model.logprobs import token_logprobs
from slm_jax.vocab import VocabLayout

REDUCTIONS = ("mean", "sum")


def modality_banned(layout: VocabLayout, vocab_padded: int, keep: str | None, ban_markers: bool | None = None,
                    allow: Sequence[int] = ()) -> np.ndarray | None:
  """bool [vocab_padded]: ids banned when only `keep` ('speech' | 'text' | None) may be predicted.

  docs/reference.md §6: speech keeps the unit ids only (all text ids and both markers banned); text bans the unit ids (and
  the markers too when `ban_markers`, as generation wants). `allow` un-bans ids (an EOS that should stop).
  """
  if keep is None:
    return None
  lo, hi = layout.unit_offset, layout.speech_id
  banned = np.zeros(vocab_padded, bool)
  if keep == "speech":
    banned[:] = True
    banned[lo:hi] = False
  elif keep == "text":
    banned[lo:hi] = True
    if ban_markers:
      banned[[layout.speech_id, layout.text_id]] = True
  else:
    raise ValueError(f"modality must be 'speech', 'text' or None, got {keep!r}")
  for i in allow:
    if i is not None:
      banned[int(i)] = False
  return banned


def plan_buckets(lengths: Sequence[int], max_buckets: int = 4, granule: int = 8) -> list[int]:
  """Bucket lengths (multiples of `granule`) minimising the padded token count of `lengths` (exact DP)."""
  if not len(lengths):
    return []
  rounded = -(-np.asarray(lengths, np.int64) // granule) * granule
  sizes, counts = np.unique(rounded, return_counts=True)
  m, k = len(sizes), min(max_buckets, len(sizes))
  csum = np.concatenate([[0], np.cumsum(counts)])
  inf = float("inf")
  # cost[j][i]: best padded tokens covering sizes[:i] with j buckets, the last one being sizes[i-1]
  cost = np.full((k + 1, m + 1), inf)
  back = np.zeros((k + 1, m + 1), np.int64)
  cost[0, 0] = 0.0
  for j in range(1, k + 1):
    for i in range(1, m + 1):
      prev = cost[j - 1, :i] + sizes[i - 1] * (csum[i] - csum[:i])
      a = int(np.argmin(prev))
      cost[j, i], back[j, i] = prev[a], a
  j = int(np.argmin(cost[1:, m])) + 1
  out, i = [], m
  while i > 0:
    out.append(int(sizes[i - 1]))
    i, j = int(back[j, i]), j - 1
  return sorted(out)


@dataclasses.dataclass
class ScoreResult:
  """Per sequence: summed log-prob, target count and the requested score; per-token log-probs on request."""
  sums: np.ndarray
  counts: np.ndarray
  scores: np.ndarray
  token_logprobs: list[np.ndarray] | None = None
  buckets: list[int] = dataclasses.field(default_factory=list)
  padded_tokens: int = 0
  real_tokens: int = 0


class Scorer:
  """Scores many token sequences with one model; compiles once per (bucket length, batch) shape.

  tokens_per_batch bounds B * T of a step; batches are rounded to the number of batch shards of the mesh.
  logit_positions bounds B * chunk, the positions whose fp32 logits exist at once (x vocabulary x 4 bytes:
  2048 x 128,768 ids = 1 GB), so a large vocabulary never needs tokens_per_batch x vocabulary floats.
  """

  def __init__(self, model, mesh: Mesh, tokens_per_batch: int = 16384, max_buckets: int = 4, granule: int = 8,
               chunk_size: int = 512, max_batch: int = 1024, logit_positions: int = 2048):
    self.mesh = mesh
    self.cfg = model.cfg
    self.graphdef, self.state = nnx.split(model)
    self.tokens_per_batch, self.max_buckets, self.granule = tokens_per_batch, max_buckets, granule
    self.max_batch = max_batch
    self.shards = int(np.prod([mesh.shape[a] for a in ("data", "fsdp") if a in mesh.shape]))
    graphdef = self.graphdef

    def score(state, ids, targets, mask, banned):
      model = nnx.merge(graphdef, state)
      ids = sharding.constrain(ids, ("batch", "length"))
      hidden = model(ids)  # right padding: causal attention keeps it out of every real position
      rows, length = ids.shape
      chunk = max(1, min(chunk_size, length, logit_positions // rows))
      lp = token_logprobs(model, hidden, targets, banned=banned, chunk_size=chunk)
      return jnp.where(mask, lp, 0.0)

    self._score = jax.jit(score)
    self._no_ban = jnp.zeros((self.cfg.padded_vocab_size,), bool)

  def _batch_size(self, length: int, n_items: int) -> int:
    """Rows per step: within tokens_per_batch, the bucket's items spread evenly over its steps (few dummy
    rows), a multiple of the batch shards."""
    most = max(1, min(self.tokens_per_batch // length, self.max_batch))
    steps = -(-n_items // most)
    b = -(-n_items // steps)
    return -(-b // self.shards) * self.shards

  def score(self, seqs: Sequence[np.ndarray], reduce: str = "mean", banned: np.ndarray | None = None,
            keep_tokens: bool = False, buckets: Sequence[int] | None = None, names: Sequence[str] | None = None
            ) -> ScoreResult:
    """Scores `seqs` (int token id arrays, >= 2 tokens each: the first is context only)."""
    if reduce not in REDUCTIONS:
      raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    seqs = [np.asarray(s, np.int32) for s in seqs]
    for i, s in enumerate(seqs):
      if s.ndim != 1 or len(s) < 2:
        who = names[i] if names is not None else f"sequence {i}"
        raise ValueError(f"{who}: needs at least 2 tokens to score (the first is context only), has {s.size}")
      if s.min() < 0 or s.max() >= self.cfg.vocab_size:
        who = names[i] if names is not None else f"sequence {i}"
        raise ValueError(f"{who}: token ids {s.min()}..{s.max()} outside the model vocabulary "
                         f"0..{self.cfg.vocab_size - 1}")
    n = len(seqs)
    lens = np.array([len(s) - 1 for s in seqs], np.int64)  # model inputs / targets per sequence
    buckets = sorted(buckets) if buckets is not None else plan_buckets(lens, self.max_buckets, self.granule)
    if n and lens.max() > buckets[-1]:
      raise ValueError(f"longest sequence ({lens.max() + 1} tokens) exceeds the largest bucket {buckets[-1]}")
    banned_arr = self._no_ban if banned is None else jnp.asarray(banned, bool)
    if banned_arr.shape != (self.cfg.padded_vocab_size,):
      raise ValueError(f"banned mask has shape {banned_arr.shape}, expected ({self.cfg.padded_vocab_size},)")
    order = np.argsort(lens, kind="stable")
    bucket_of = np.searchsorted(np.asarray(buckets), lens[order], side="left")
    sums = np.zeros(n, np.float64)
    tok_out: list = [None] * n
    pending, padded = [], 0
    progress = console.bar(total=n, desc="scoring", unit="seq")  # advances as results come back
    with jax.set_mesh(self.mesh):
      for b, T in enumerate(buckets):
        idx = order[bucket_of == b]
        if not len(idx):
          continue
        B = self._batch_size(T, len(idx))
        for start in range(0, len(idx), B):
          rows = idx[start:start + B]
          ids = np.zeros((B, T), np.int32)
          tgt = np.zeros((B, T), np.int32)
          mask = np.zeros((B, T), bool)
          for r, i in enumerate(rows):
            L = lens[i]
            ids[r, :L], tgt[r, :L], mask[r, :L] = seqs[i][:-1], seqs[i][1:], True
          sh = NamedSharding(self.mesh, sharding.logical_to_spec(("batch", "length"), (B, T), self.mesh))
          arrs = [jax.device_put(a, sh) for a in (ids, tgt, mask)]
          pending.append((rows, self._score(self.state, *arrs, banned_arr)))
          padded += B * T
    for rows, out in pending:
      out = np.asarray(out)
      for r, i in enumerate(rows):
        lp = out[r, :lens[i]]
        sums[i] = lp.astype(np.float64).sum()
        if keep_tokens:
          tok_out[i] = lp
      progress.update(len(rows))
    progress.close()
    counts = lens.astype(np.float64)
    scores = sums / np.maximum(counts, 1) if reduce == "mean" else sums.copy()
    return ScoreResult(sums=sums, counts=counts, scores=scores, token_logprobs=tok_out if keep_tokens else None,
                       buckets=list(buckets), padded_tokens=padded, real_tokens=int(lens.sum()))


def pair_outcomes(correct: np.ndarray, wrong: np.ndarray) -> np.ndarray:
  """1 where correct > wrong, 0.5 on a tie, 0 otherwise (docs/reference.md §6, the ZeroSpeech convention)."""
  correct, wrong = np.asarray(correct, np.float64), np.asarray(wrong, np.float64)
  return (correct > wrong) + 0.5 * (correct == wrong)
