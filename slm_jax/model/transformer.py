"""Flax NNX decoder for Llama-3.x and Qwen2/2.5, module names as in transformers.

Einsum letters: B batch, T query length, S key length, D model dim, N query heads, K kv heads,
G query heads per kv head, H head dim, F mlp dim, V vocabulary.
Parameter paths mirror HF (`model.layers.3.self_attn.q_proj.kernel` <-> `...q_proj.weight`, transposed). With
`scan_layers` the decoder layers are one `DecoderLayer` whose parameters carry a leading layer axis
(`model.layers.self_attn.q_proj.kernel` [L, in, out], logical axis 'layers'); slm_jax.checkpoint.weight_map
converts between the two layouts.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from slm_jax.layout import Branches
from slm_jax.model.config import ModelConfig, check_remat_policy
from slm_jax.model.splash import splash_attention, target_platform
from slm_jax.sharding import constrain

NEG_INF = -1e9  # finite: fully masked rows stay NaN-free


def _dtype(name: str):
  return jnp.dtype(name)


# names of the attention tensors the save_* remat policies keep (`jax.ad_checkpoint.checkpoint_name`)
_QKV_NAMES = ("query_proj", "key_proj", "value_proj")


def remat_policy(name: str):
  """The `jax.checkpoint` policy of a `ModelConfig.remat_policy` name (what the backward pass may keep)."""
  cp = jax.checkpoint_policies
  return {"nothing_saveable": cp.nothing_saveable,
          "dots_with_no_batch_dims_saveable": cp.dots_with_no_batch_dims_saveable,
          "dots_saveable": cp.dots_saveable,
          "save_qkv_proj": cp.save_only_these_names(*_QKV_NAMES),
          "save_qkv_attention": cp.save_only_these_names(*_QKV_NAMES, "attention_out")}[check_remat_policy(name)]


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
  """Inverse frequencies [H/2], with the llama3 scaling of transformers' `_compute_llama3_parameters`."""
  dim = cfg.head_dim
  inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
  s = cfg.rope_scaling
  if s:
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    inv_freq = np.where(medium, smoothed, scaled)
  return inv_freq.astype(np.float32)


def rope_cos_sin(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """cos, sin [B, T, H] in fp32 for integer positions [B, T] (rotate-half layout)."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x [B, T, heads, H]."""
  half = x.shape[-1] // 2
  rot = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
  return x * cos + rot * sin


class Linear(nnx.Module):
  """y = x @ kernel (+ bias); kernel stored [in, out] (HF's weight transposed)."""

  def __init__(self, din: int, dout: int, logical: tuple[str, str], cfg: ModelConfig, *, rngs: nnx.Rngs,
               bias: bool = False):
    pdt = _dtype(cfg.param_dtype)
    self.kernel = nnx.Param(jax.random.normal(rngs.params(), (din, dout), pdt) * 0.02, logical_axes=logical)
    self.bias = nnx.Param(jnp.zeros((dout,), pdt), logical_axes=(logical[1],)) if bias else None
    self.dtype = _dtype(cfg.dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    # as one [rows, in] @ [in, out] matmul: XLA:CPU runs the kernel gradient of a dot that contracts two dims
    # (batch, time) about 3x slower than the same 2-D matmul (tools/bench_dpo.py); elsewhere it is the same program
    lead = x.shape[:-1]
    y = jnp.dot(x.reshape(-1, x.shape[-1]).astype(self.dtype), self.kernel[...].astype(self.dtype))
    y = y.reshape(*lead, y.shape[-1])
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class RMSNorm(nnx.Module):
  def __init__(self, dim: int, cfg: ModelConfig):
    self.weight = nnx.Param(jnp.ones((dim,), _dtype(cfg.param_dtype)), logical_axes=("norm",))
    self.eps = cfg.rms_norm_eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.weight[...].astype(x.dtype) * x32.astype(x.dtype)


class Embed(nnx.Module):
  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    pdt = _dtype(cfg.param_dtype)
    self.embedding = nnx.Param(jax.random.normal(rngs.params(), (cfg.padded_vocab_size, cfg.hidden_size), pdt) * 0.02,
                               logical_axes=("vocab", "embed"))
    self.dtype = _dtype(cfg.dtype)

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)


# the XLA path of causal self-attention in query blocks (at most this many, each at least MIN_ATTENTION_BLOCK long)
ATTENTION_BLOCKS = 8
MIN_ATTENTION_BLOCK = 32


def resolve_attention_impl(impl: str, dtype: str, decoding: bool = False) -> str:
  """'auto' -> splash on TPU (XLA when decoding with a cache), cuDNN on GPU (bf16/fp16 compute), XLA
  otherwise; other names unchanged."""
  if impl != "auto":
    return impl
  platform = target_platform()
  if platform == "tpu" and not decoding:
    return "splash"
  if platform in ("gpu", "cuda") and dtype in ("bfloat16", "float16"):
    return "cudnn"
  return "xla"


def attention(q, k, v, mask, impl: str, causal_only: bool, causal: bool | Branches = False):
  """q [B,T,N,H], k/v [B,S,K,H] -> [B,T,N,H]. mask: [B,T,S] bool (None when causal_only); for impl='splash'
  (self-attention only) the segment ids [B,T] instead (None: one causal document per row). causal: the mask
  allows no key after its query (self-attention without a cache), so the XLA path may skip the upper triangle;
  a `Branches` layout (the mask holds its rule) also skips each branch's keys for the other branches' queries."""
  B, T = q.shape[:2]
  if impl == "splash":
    if isinstance(causal, Branches):
      raise ValueError("attention_impl='splash' has no shared-prefix (branch) mask: use xla or cudnn")
    return splash_attention(q, k, v, mask)
  if impl == "cudnn":
    if causal_only:
      return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation="cudnn")
  if impl != "xla":
    raise ValueError(f"unknown attention_impl {impl!r} (xla, cudnn or splash)")
  S = k.shape[1]
  if causal_only:
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((T, S), bool), S - T)[None], (B, T, S))
  branches = causal if isinstance(causal, Branches) else None
  if T == S and (branches is not None or (causal and T >= 2 * MIN_ATTENTION_BLOCK)):
    # query blocks against only the keys up to their end: the causal upper triangle is never computed, and each
    # block's scores are a fraction of the [B, heads, T, T] tensor (XLA:CPU: fwd+bwd 140 -> 74 ms per layer at
    # 16 x 256, tools/bench_dpo.py); softmax rows are the same, so is the result
    block = max(MIN_ATTENTION_BLOCK, -(-T // ATTENTION_BLOCKS))
    blocks = (branches.key_blocks(block) if branches is not None else
              [(i, min(i + block, T), [(0, min(i + block, T))]) for i in range(0, T, block)])
    return _xla_attention(q, k, v, mask, blocks)
  return _xla_attention(q, k, v, mask)


def _xla_attention(q, k, v, mask, blocks=None):
  """Softmax attention in head-major layout ([B, K, G, T, H]: q, k and v are transposed once, and each query
  block reads contiguous slices; per block transposes cost fwd+bwd 110 -> 95 ms per layer at 16 x 256 on
  XLA:CPU). blocks: (query start, end, key ranges) computed one by one; None: all queries against all keys."""
  B, T, N, H = q.shape
  S, K = k.shape[1], k.shape[2]
  qh = q.reshape(B, T, K, N // K, H).transpose(0, 2, 3, 1, 4)
  kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
  cat = lambda xs, axis: xs[0] if len(xs) == 1 else jnp.concatenate(xs, axis=axis)  # noqa: E731
  outs = []
  for i, e, ranges in blocks or [(0, T, [(0, S)])]:
    kb, vb = cat([kh[:, :, a:b] for a, b in ranges], 2), cat([vh[:, :, a:b] for a, b in ranges], 2)
    mb = cat([mask[:, i:e, a:b] for a, b in ranges], 2)
    scores = jnp.einsum("bkgth,bksh->bkgts", qh[:, :, :, i:e], kb, preferred_element_type=jnp.float32) / math.sqrt(H)
    scores = jnp.where(mb[:, None, None], scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    outs.append(jnp.einsum("bkgts,bksh->bkgth", probs, vb))
  return cat(outs, 3).transpose(0, 3, 1, 2, 4).reshape(B, T, N, H)


class Attention(nnx.Module):
  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    D, N, K, H = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    b = cfg.attention_bias
    self.q_proj = Linear(D, N * H, ("embed", "q_heads"), cfg, rngs=rngs, bias=b)
    self.k_proj = Linear(D, K * H, ("embed", "kv_heads"), cfg, rngs=rngs, bias=b)
    self.v_proj = Linear(D, K * H, ("embed", "kv_heads"), cfg, rngs=rngs, bias=b)
    self.o_proj = Linear(N * H, D, ("q_heads", "embed"), cfg, rngs=rngs)
    self.shape = (N, K, H)
    self.impl = cfg.attention_impl

  def __call__(self, x, cos, sin, mask, structure, cache=None, cache_index=None):
    """structure (static): 'causal' (no mask: one causal document per row), 'mask' (`mask` says it all) or the
    `Branches` layout of shared-prefix rows (with its rule in `mask`)."""
    B, T, _ = x.shape
    N, K, H = self.shape
    name = jax.ad_checkpoint.checkpoint_name
    q = apply_rope(name(self.q_proj(x), "query_proj").reshape(B, T, N, H), cos, sin)
    k = apply_rope(name(self.k_proj(x), "key_proj").reshape(B, T, K, H), cos, sin)
    v = name(self.v_proj(x), "value_proj").reshape(B, T, K, H)
    q = constrain(q, ("batch", "length", "act_heads", "head_dim"))
    if cache is not None:
      k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), (0, cache_index, 0, 0))
      v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), (0, cache_index, 0, 0))
      cache = {"k": k, "v": v}
      k, v = k.astype(q.dtype), v.astype(q.dtype)
    impl = resolve_attention_impl(self.impl, str(self.q_proj.dtype), decoding=cache is not None)
    if impl == "splash" and isinstance(structure, Branches):
      impl = "xla"  # 'auto' on TPU: splash has no branch mask (an explicit 'splash' fails in CausalLM._forward)
    if impl == "splash" and cache is not None:
      raise ValueError("attention_impl='splash' has no decoding path: use xla or auto for generation")
    causal = structure if isinstance(structure, Branches) else cache is None
    out = attention(q, k, v, mask, impl, structure == "causal", causal=causal)
    out = jax.ad_checkpoint.checkpoint_name(out.reshape(B, T, N * H), "attention_out")
    return self.o_proj(out), cache


class MLP(nnx.Module):
  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    D, F = cfg.hidden_size, cfg.intermediate_size
    self.gate_proj = Linear(D, F, ("embed", "mlp"), cfg, rngs=rngs)
    self.up_proj = Linear(D, F, ("embed", "mlp"), cfg, rngs=rngs)
    self.down_proj = Linear(F, D, ("mlp", "embed"), cfg, rngs=rngs)

  def __call__(self, x):
    h = jax.nn.silu(self.gate_proj(x)) * self.up_proj(x)
    h = constrain(h, ("batch", "length", "act_mlp"))
    return self.down_proj(h)


class DecoderLayer(nnx.Module):
  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.input_layernorm = RMSNorm(cfg.hidden_size, cfg)
    self.self_attn = Attention(cfg, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x, cos, sin, mask, structure, cache=None, cache_index=None):
    h, cache = self.self_attn(self.input_layernorm(x), cos, sin, mask, structure, cache, cache_index)
    x = constrain(x + h, ("batch", "length", "act_embed"))
    x = x + self.mlp(self.post_attention_layernorm(x))
    return constrain(x, ("batch", "length", "act_embed")), cache


def _is_var(x) -> bool:
  return isinstance(x, nnx.Variable)


def stack_layers(layers: list[nnx.Module]) -> nnx.Module:
  """One module of `layers`' structure whose variables stack theirs on a new leading axis (logical 'layers')."""
  graphdef = nnx.graphdef(layers[0])
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[nnx.state(m) for m in layers])
  for v in jax.tree.leaves(stacked, is_leaf=_is_var):
    v.set_metadata(logical_axes=("layers",) + tuple(v.get_metadata("logical_axes", None) or (None,) * (v.ndim - 1)))
  return nnx.merge(graphdef, stacked)


class Model(nnx.Module):
  """Embeddings, decoder layers and final norm. `layers`: an `nnx.List` of `DecoderLayer`s, or with
  cfg.scan_layers one `DecoderLayer` holding all of them stacked (created from the same random draws, in the same
  order, as the list: a seed gives both layouts the same values)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.embed_tokens = Embed(cfg, rngs=rngs)
    layers = [DecoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_hidden_layers)]
    self.layers = stack_layers(layers) if cfg.scan_layers else nnx.List(layers)
    self.norm = RMSNorm(cfg.hidden_size, cfg)


class CausalLM(nnx.Module):
  """`model` (embeddings, layers, final norm) and, when untied, `lm_head`, as in HF's *ForCausalLM."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.model = Model(cfg, rngs=rngs)
    self.lm_head = (None if cfg.tie_word_embeddings else
                    Linear(cfg.hidden_size, cfg.padded_vocab_size, ("embed", "vocab"), cfg, rngs=rngs))

  def __call__(self, input_ids, positions=None, segment_ids=None, branches: Branches | None = None) -> jax.Array:
    """Final-norm hidden states [B, T, D].

    positions restart at each packed document; segment_ids (>= 1 for tokens, 0 for padding) keep documents apart.
    Without segment_ids the row is one causal document. `branches`: rows of that shared-prefix layout (T equal to
    its total), each branch attending to the prefix and itself; positions continue the prefix in every branch.
    """
    return self._forward(input_ids, positions, segment_ids, None, branches)[0]

  def decode(self, input_ids, cache: dict, positions=None, segment_ids=None) -> tuple[jax.Array, dict]:
    """(hidden states [B, T, D], updated cache): the T new tokens attend to the cache (from `init_cache`) and
    themselves; prefill and one-token steps alike."""
    return self._forward(input_ids, positions, segment_ids, cache)

  def _forward(self, input_ids, positions, segment_ids, cache, branches=None):
    B, T = input_ids.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32)[None], (B, T))
    x = constrain(self.model.embed_tokens(input_ids), ("batch", "length", "act_embed"))
    cos, sin = rope_cos_sin(positions, rope_inv_freq(self.cfg))
    structure = "causal" if segment_ids is None and cache is None else "mask"
    mask, index = None, None
    if branches is not None:
      if cache is not None or T != branches.total:
        raise ValueError(f"shared-prefix rows of {branches} are {branches.total} long without a cache, got length {T}"
                         + (" with a cache" if cache is not None else ""))
      if self.cfg.attention_impl == "splash":
        raise ValueError("attention_impl='splash' has no shared-prefix (branch) mask: use xla or cudnn "
                         "(config.model.attention_impl), or the standard DPO rows (dpo.shared_prompt=False)")
      seg = jnp.ones((B, T), jnp.int32) if segment_ids is None else segment_ids
      mask = (jnp.asarray(np.tril(np.ones((T, T), bool)) & branches.visible())[None]
              & (seg[:, :, None] == seg[:, None, :]))
      structure = branches
    elif cache is not None:
      index = cache["index"]
      seg = jnp.ones((B, T), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
      kv_seg = jax.lax.dynamic_update_slice(cache["segment_ids"], seg, (0, index))
      S = kv_seg.shape[1]
      q_slot = index + jnp.arange(T)
      mask = (q_slot[:, None] >= jnp.arange(S)[None, :])[None] & (seg[:, :, None] == kv_seg[:, None, :])
    elif resolve_attention_impl(self.cfg.attention_impl, self.cfg.dtype) == "splash":
      mask = segment_ids  # the kernel masks by segment ids itself (None: causal)
    elif segment_ids is not None:
      mask = (jnp.tril(jnp.ones((T, T), bool))[None]
              & (segment_ids[:, :, None] == segment_ids[:, None, :]))
    if self.cfg.scan_layers and cache is None:
      x = self._scan_layers(x, cos, sin, mask, structure)
    else:
      x, new_layers = self._layer_loop(x, cos, sin, mask, structure, cache, index)
    x = self.model.norm(x)
    if cache is None:
      return x, None
    return x, {"layers": new_layers, "segment_ids": kv_seg, "index": index + T}

  def _layer_loop(self, x, cos, sin, mask, structure, cache, index):
    """The layers one after the other (stacked ones sliced layer by layer); (x, each layer's new cache)."""
    new_layers = []
    if self.cfg.scan_layers:
      graphdef, stacked = nnx.split(self.model.layers)
      layers = [nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], stacked))
                for i in range(self.cfg.num_hidden_layers)]
    else:
      layers = list(self.model.layers)
    for i, layer in enumerate(layers):
      if self.cfg.remat and cache is None:
        fn = nnx.remat(lambda l, *a: l(*a), static_argnums=(5,), policy=remat_policy(self.cfg.remat_policy))
        x, c = fn(layer, x, cos, sin, mask, structure)
      else:
        x, c = layer(x, cos, sin, mask, structure, None if cache is None else cache["layers"][i], index)
      new_layers.append(c)
    return x, new_layers

  def _scan_layers(self, x, cos, sin, mask, structure):
    """The stacked decoder layers as one `lax.scan` (one layer body to compile), the body rematerialised by
    cfg.remat_policy when cfg.remat."""
    graphdef, stacked = nnx.split(self.model.layers)

    def body(h, state):
      h, _ = nnx.merge(graphdef, state)(h, cos, sin, mask, structure)
      return h, None

    if self.cfg.remat:  # prevent_cse=False: scan already keeps the recomputation apart from the forward
      body = jax.checkpoint(body, policy=remat_policy(self.cfg.remat_policy), prevent_cse=False)
    x, _ = jax.lax.scan(body, x, stacked)
    return x

  def head_weight(self) -> jax.Array:
    """Output projection as [D, V_padded]."""
    if self.lm_head is None:
      return self.model.embed_tokens.embedding[...].T
    return self.lm_head.kernel[...]

  def logits(self, hidden: jax.Array, dtype=jnp.float32) -> jax.Array:
    """Logits [..., V_padded]; padded vocabulary rows are pushed to -1e9 so they never win."""
    w = self.head_weight().astype(hidden.dtype)
    out = jnp.einsum("...d,dv->...v", hidden, w, preferred_element_type=dtype)
    valid = jnp.arange(out.shape[-1]) < self.cfg.vocab_size
    return jnp.where(valid, out, NEG_INF).astype(dtype)


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> dict:
  dt = _dtype(dtype or cfg.dtype)
  shape = (batch, max_len, cfg.num_key_value_heads, cfg.head_dim)
  return {"layers": [{"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt)} for _ in range(cfg.num_hidden_layers)],
          "segment_ids": jnp.zeros((batch, max_len), jnp.int32), "index": jnp.zeros((), jnp.int32)}
