"""KV-cache generation in one compiled loop (docs/reference.md §6): greedy / temperature / top-k / top-p, banned ids, EOS.

Prompts of different lengths are left-padded (segment id 0, never attended) so that every row writes the same
cache slot at each step; positions count each row's own tokens. Prefill and the `lax.while_loop` decode run in
one jitted function of the split NNX state; the batch (and the cache) is sharded over ('data', 'fsdp'). When the
ban leaves few ids (speech output: the units), the head is applied to those columns only: the same distribution
(banned ids have probability 0 either way) at a fraction of the cost.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from slm_jax import sharding
from slm_jax.eval.scoring import modality_banned
from slm_jax.frames import FRAME_S, unit_end_times
from slm_jax.model.transformer import NEG_INF, init_cache
from slm_jax.vocab import VocabLayout

SEGMENT_LOGICAL = ("batch", "length")
CACHE_LOGICAL = ("batch", "length", "act_kv_heads", "head_dim")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """SIMS defaults: temperature 0.8, top-k 25, 150 new tokens. top_k=0 / top_p=1 switch those filters off."""
  max_new_tokens: int = 150
  greedy: bool = False
  temperature: float = 0.8
  top_k: int = 25
  top_p: float = 1.0
  repetition_penalty: float = 1.0  # HF semantics; slamkit's GenPPL config uses 1.1


def process_logits(logits: jax.Array, sc: SamplingConfig, banned: jax.Array | None = None,
                   seen: jax.Array | None = None) -> jax.Array:
  """fp32 logits [B, V] -> the logits sampled from, in transformers' order: penalty, ban, temperature, top-k,
  top-p. Removed ids get NEG_INF (finite: a row never turns NaN)."""
  logits = logits.astype(jnp.float32)
  if sc.repetition_penalty != 1.0 and seen is not None:
    pen = jnp.where(logits < 0, logits * sc.repetition_penalty, logits / sc.repetition_penalty)
    logits = jnp.where(seen, pen, logits)
  if banned is not None:
    logits = jnp.where(banned, NEG_INF, logits)
  if sc.greedy:
    return logits
  logits = logits / sc.temperature
  if sc.top_k and sc.top_k < logits.shape[-1]:
    logits = jnp.where(logits < kth_largest(logits, sc.top_k)[..., None], NEG_INF, logits)
  if sc.top_p < 1.0:
    desc = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(desc, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of the better tokens
    keep = before < sc.top_p  # the smallest top set reaching top_p (never empty)
    last = jnp.sum(keep, axis=-1, keepdims=True) - 1
    cutoff = jnp.take_along_axis(desc, last, axis=-1)
    logits = jnp.where(logits < cutoff, NEG_INF, logits)
  return logits


def kth_largest(x: jax.Array, k: int) -> jax.Array:
  """Exact k-th largest value of each row of fp32 `x` [B, V] by bisection on the float bit patterns: 32 passes
  of compare-and-count, much faster than `lax.top_k` on CPU over a 128k vocabulary."""
  u = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  key = jnp.where(u >> 31 == 1, ~u, u | jnp.uint32(1 << 31))  # order-preserving map to unsigned ints

  def body(i, t):
    cand = t | (jnp.uint32(1) << (31 - i).astype(jnp.uint32))
    return jnp.where(jnp.sum(key >= cand[..., None], axis=-1) >= k, cand, t)

  t = jax.lax.fori_loop(0, 32, body, jnp.zeros(x.shape[:-1], jnp.uint32))
  return jax.lax.bitcast_convert_type(jnp.where(t >> 31 == 1, t & jnp.uint32(0x7FFFFFFF), ~t), jnp.float32)


def sample(logits: jax.Array, key: jax.Array, sc: SamplingConfig, banned=None, seen=None) -> jax.Array:
  logits = process_logits(logits, sc, banned, seen)
  if sc.greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@dataclasses.dataclass
class GenerationOutput:
  tokens: list[np.ndarray]      # new tokens per prompt, EOS excluded
  stopped: np.ndarray           # bool per prompt: ended on an EOS id
  seconds: float                # wall time of the compiled call (includes compilation on first use)
  new_tokens: int               # generated tokens counted over rows until each stopped


def left_pad(prompts: Sequence[np.ndarray], length: int, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(ids, positions, segment_ids) [rows, length]; prompts right-aligned; extra rows repeat prompt 0."""
  ids = np.zeros((rows, length), np.int32)
  pos = np.zeros((rows, length), np.int32)
  seg = np.zeros((rows, length), np.int32)
  for r in range(rows):
    p = np.asarray(prompts[r if r < len(prompts) else 0], np.int32)
    n = len(p)
    ids[r, length - n:], pos[r, length - n:], seg[r, length - n:] = p, np.arange(n), 1
  return ids, pos, seg


class Generator:
  """Compiled KV-cache sampler for one model; compiles once per (batch, prompt bucket, sampling config)."""

  def __init__(self, model, mesh: Mesh, pad_multiple: int = 16, restrict_vocab: bool = True):
    self.mesh, self.cfg, self.pad_multiple = mesh, model.cfg, pad_multiple
    self.restrict_vocab = restrict_vocab
    self.graphdef, self.state = nnx.split(model)
    self.shards = int(np.prod([mesh.shape[a] for a in ("data", "fsdp") if a in mesh.shape]))
    self._fns: dict = {}

  def _fn(self, sc: SamplingConfig):
    if sc in self._fns:
      return self._fns[sc]
    graphdef, cfg = self.graphdef, self.cfg
    N = sc.max_new_tokens

    def run(state, ids, positions, segs, key, banned, eos, allowed):
      model = nnx.merge(graphdef, state)
      B, P = ids.shape
      if allowed is None:
        head = model.logits

        def pick(logits, key, seen):
          return sample(logits, key, sc, banned, seen)
      else:  # only `allowed` ids can be sampled: project onto those columns of the head alone
        valid = allowed >= 0
        cols = jnp.where(valid, allowed, 0)
        w = jnp.take(model.head_weight(), cols, axis=1)

        def head(h):
          lg = jnp.einsum("bd,da->ba", h, w.astype(h.dtype), preferred_element_type=jnp.float32)
          return jnp.where(valid, lg, NEG_INF)

        def pick(logits, key, seen):
          return cols[sample(logits, key, sc, None, None if seen is None else seen[:, cols])]
      ids = sharding.constrain(ids, SEGMENT_LOGICAL)
      cache = init_cache(cfg, B, P + N)
      cache["layers"] = [{k: sharding.constrain(v, CACHE_LOGICAL) for k, v in c.items()} for c in cache["layers"]]
      hidden, cache = model.decode(ids, cache, positions, segs)
      seen = None
      if sc.repetition_penalty != 1.0:
        counts = jnp.zeros((B, cfg.padded_vocab_size), jnp.int32)
        seen = counts.at[jnp.arange(B)[:, None], ids].add((segs > 0).astype(jnp.int32)) > 0
      key, sub = jax.random.split(key)
      tok = pick(head(hidden[:, -1]), sub, seen)
      done = jnp.isin(tok, eos)
      out = jnp.zeros((B, N), jnp.int32).at[:, 0].set(tok)
      lengths = jnp.where(done, 0, 1).astype(jnp.int32)  # tokens before the first EOS
      pos = positions[:, -1] + 1

      def cond(c):
        step, done = c[0], c[3]
        return (step < N) & ~jnp.all(done)

      def body(c):
        step, cache, tok, done, out, lengths, pos, key, seen = c
        h, cache = model.decode(tok[:, None], cache, pos[:, None], jnp.ones_like(tok)[:, None])
        if seen is not None:
          seen = seen.at[jnp.arange(B), tok].set(True)
        key, sub = jax.random.split(key)
        nxt = pick(head(h[:, 0]), sub, seen)
        nxt = jnp.where(done, 0, nxt)
        out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, step))
        hit = jnp.isin(nxt, eos)
        lengths = lengths + (~done & ~hit).astype(jnp.int32)
        return step + 1, cache, nxt, done | hit, out, lengths, pos + 1, key, seen

      init = (jnp.int32(1), cache, tok, done, out, lengths, pos, key, seen)
      _, _, _, done, out, lengths, _, _, _ = jax.lax.while_loop(cond, body, init)
      return out, lengths, done

    self._fns[sc] = jax.jit(run)
    return self._fns[sc]

  def generate(self, prompts: Sequence[np.ndarray], sc: SamplingConfig = SamplingConfig(),
               banned: np.ndarray | None = None, eos_ids: Sequence[int] = (), seed: int = 0) -> GenerationOutput:
    """New tokens for each prompt (int id arrays of any lengths >= 1)."""
    if not len(prompts):
      return GenerationOutput([], np.zeros(0, bool), 0.0, 0)
    lens = [len(p) for p in prompts]
    if min(lens) < 1:
      raise ValueError("every prompt needs at least one token (a BOS, or a marker)")
    m = self.pad_multiple
    P = -(-max(lens) // m) * m
    rows = -(-len(prompts) // self.shards) * self.shards
    ids, pos, seg = left_pad(prompts, P, rows)
    V = self.cfg.padded_vocab_size
    ban = jnp.zeros((V,), bool) if banned is None else jnp.asarray(banned, bool)
    eos = jnp.asarray(list(eos_ids) or [-1], jnp.int32)
    allowed = None
    if banned is not None and self.restrict_vocab:
      ok = np.flatnonzero(~np.asarray(banned, bool)[:self.cfg.vocab_size])
      if len(ok) <= V // 2:  # e.g. speech output: 500 units of a 128k vocabulary
        allowed = np.full(-(-len(ok) // 128) * 128, -1, np.int32)
        allowed[:len(ok)] = ok
        allowed = jnp.asarray(allowed)
    fn = self._fn(sc)
    t0 = time.time()
    with jax.set_mesh(self.mesh):
      sh = NamedSharding(self.mesh, sharding.logical_to_spec(SEGMENT_LOGICAL, ids.shape, self.mesh))
      args = [jax.device_put(a, sh) for a in (ids, pos, seg)]
      out, lengths, done = fn(self.state, *args, jax.random.PRNGKey(seed), ban, eos, allowed)
      out, lengths, done = np.asarray(out), np.asarray(lengths), np.asarray(done)
    dt = time.time() - t0
    n = len(prompts)
    toks = [out[r, :lengths[r]] for r in range(n)]
    computed = np.minimum(lengths[:n] + done[:n], sc.max_new_tokens)  # the EOS itself was generated too
    return GenerationOutput(toks, done[:n].astype(bool), dt, int(computed.sum()))


# ---- prompts of the four directions (docs/reference.md §6) --------------------------------------------------------------
def prompt_pieces(prompt_modality: str, output_modality: str, content) -> list:
  """Speech -> speech: bare units; text -> text: the text; S->T `<speech>units<text>`; T->S `<text>text<speech>`."""
  if prompt_modality == "speech":
    pieces = [("units", content)]
    if output_modality == "text":
      pieces = [("marker", "speech")] + pieces + [("marker", "text")]
  elif prompt_modality == "text":
    pieces = [("text", content)]
    if output_modality == "speech":
      pieces = [("marker", "text")] + pieces + [("marker", "speech")]
  else:
    raise ValueError(f"prompt modality must be speech or text, got {prompt_modality!r}")
  if output_modality not in ("speech", "text"):
    raise ValueError(f"output modality must be speech or text, got {output_modality!r}")
  return pieces


def cut_units(units: Sequence[int], durations: Sequence[int] | None, seconds: float | None,
              frame_seconds: float = FRAME_S) -> np.ndarray:
  """The units whose end time (cumsum(duration) * frame) is within the first `seconds` (all when None)."""
  units = np.asarray(units, np.int64)
  if seconds is None:
    return units
  if durations is None:
    raise ValueError("cutting a prompt to seconds needs the 'duration' of each unit")
  ends = unit_end_times(durations, frame_seconds)
  return units[ends <= seconds + 1e-9]


def output_banned(layout: VocabLayout, vocab_padded: int, output_modality: str, allow_eos: bool) -> np.ndarray:
  """Everything outside the output modality is banned (markers too); the EOS only when `allow_eos`."""
  allow = [layout.eos_id] if allow_eos and layout.eos_id is not None else []
  banned = modality_banned(layout, vocab_padded, output_modality, ban_markers=True, allow=allow)
  if not allow_eos and layout.eos_id is not None:
    banned[layout.eos_id] = True  # a text LM's EOS is a text id: without a stop it must not appear either
  return banned
