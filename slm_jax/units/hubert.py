"""Flax NNX port of transformers' `HubertModel` (inference), with masks so that padding never changes a clip.

Layout (as HF): conv feature extractor (`feat_extract_norm` "group": GroupNorm on the first layer only, "layer":
LayerNorm on every layer), feature projection (optional LayerNorm, Linear), convolutional positional embedding
(grouped conv with weight norm, SamePad, GELU), transformer layers, post-LN (`do_stable_layer_norm` False, the
hubert-base / mHuBERT layout) or pre-LN with a final LayerNorm (True, the large layout).
Module paths mirror HF names (`encoder.layers.3.attention.q_proj.kernel` <-> `encoder.layers.3.attention.q_proj.weight`),
so the weight import in `hubert_import.py` is a mechanical name map.

Masking: with `lengths` (valid samples per row), the first layer's GroupNorm takes statistics over valid frames
only, padded frames are zeroed before the positional convolution and masked out of attention; every valid frame
then equals what the clip gives alone. HF's own `attention_mask` path does not do the GroupNorm part (its
group-norm models must not be given a mask), which is why batched HF outputs differ from single-clip ones.
Letters: B batch, N samples, T frames, C channels, D model dim, H heads, K head dim, S key frames.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from slm_jax.units import audio as audio_lib


@dataclasses.dataclass(frozen=True)
class HubertConfig:
  conv_dim: tuple = (512,) * 7
  conv_kernel: tuple = audio_lib.HUBERT_50HZ_CONV[0]
  conv_stride: tuple = audio_lib.HUBERT_50HZ_CONV[1]
  conv_bias: bool = False
  feat_extract_norm: str = "group"
  feat_proj_layer_norm: bool = True
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  layer_norm_eps: float = 1e-5
  num_conv_pos_embeddings: int = 128
  num_conv_pos_embedding_groups: int = 16
  do_stable_layer_norm: bool = False
  hidden_act: str = "gelu"
  feat_extract_activation: str = "gelu"

  @classmethod
  def from_hf_dict(cls, d: dict) -> "HubertConfig":
    if d.get("conv_pos_batch_norm"):
      raise NotImplementedError("conv_pos_batch_norm=True (a batch-norm positional embedding) is not supported")
    for key, ok in (("hidden_act", ("gelu",)), ("feat_extract_activation", ("gelu",)),
                    ("feat_extract_norm", ("group", "layer"))):
      if d.get(key, ok[0]) not in ok:
        raise NotImplementedError(f"HuBERT config {key}={d[key]!r} is not supported (supported: {ok})")
    fields = {f.name for f in dataclasses.fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields}
    return cls(**kw)

  @classmethod
  def from_dir(cls, path: str) -> "HubertConfig":
    with open(os.path.join(path, "config.json")) as f:
      return cls.from_hf_dict(json.load(f))

  @property
  def conv(self):
    return (self.conv_kernel, self.conv_stride)


def mhubert_base_25hz() -> HubertConfig:
  """The shape of slprl/mhubert-base-25hz: hubert-base with a 640-sample frame (one more stride-2 conv layer)."""
  k, s = audio_lib.MHUBERT_25HZ_CONV
  return HubertConfig(conv_dim=(512,) * len(k), conv_kernel=k, conv_stride=s)


def _gelu(x):
  return jax.nn.gelu(x, approximate=False)


class LayerNorm(nnx.Module):
  def __init__(self, dim: int, eps: float):
    self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
    self.eps = eps

  def __call__(self, x):
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * self.weight[...] + self.bias[...]
    return y.astype(x.dtype)


class Linear(nnx.Module):
  """kernel [in, out] (HF weight transposed)."""

  def __init__(self, din: int, dout: int, rngs: nnx.Rngs):
    self.kernel = nnx.Param(jax.random.normal(rngs.params(), (din, dout), jnp.float32) * 0.02)
    self.bias = nnx.Param(jnp.zeros((dout,), jnp.float32))

  def __call__(self, x):
    return jnp.dot(x, self.kernel[...].astype(x.dtype)) + self.bias[...].astype(x.dtype)


def _conv1d(x, kernel, stride: int = 1, padding=((0, 0),), groups: int = 1):
  """x [B, N, Cin], kernel [K, Cin/groups, Cout] -> [B, N', Cout]."""
  return jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (stride,), padding,
                                      dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups)


class Conv1d(nnx.Module):
  """kernel [K, Cin, Cout] (HF weight [Cout, Cin, K] transposed)."""

  def __init__(self, cin: int, cout: int, k: int, stride: int, bias: bool, rngs: nnx.Rngs):
    self.kernel = nnx.Param(jax.random.normal(rngs.params(), (k, cin, cout), jnp.float32) / np.sqrt(k * cin))
    self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32)) if bias else None
    self.stride = stride

  def __call__(self, x):
    y = _conv1d(x, self.kernel[...], self.stride)
    return y if self.bias is None else y + self.bias[...].astype(y.dtype)


class GroupNorm(nnx.Module):
  """GroupNorm with one group per channel (HF's first conv layer), statistics over valid frames only."""

  def __init__(self, dim: int, eps: float = 1e-5):
    self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
    self.eps = eps

  def __call__(self, x, mask):  # x [B, T, C], mask [B, T] bool or None
    xf = x.astype(jnp.float32)
    if mask is None:
      mean = xf.mean(1, keepdims=True)
      var = jnp.square(xf - mean).mean(1, keepdims=True)
    else:
      m = mask[..., None].astype(jnp.float32)
      cnt = jnp.maximum(m.sum(1, keepdims=True), 1.0)
      mean = (xf * m).sum(1, keepdims=True) / cnt
      var = (jnp.square(xf - mean) * m).sum(1, keepdims=True) / cnt
    y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * self.weight[...] + self.bias[...]
    return y.astype(x.dtype)


class ConvLayer(nnx.Module):
  def __init__(self, cfg: HubertConfig, i: int, rngs: nnx.Rngs):
    cin = cfg.conv_dim[i - 1] if i > 0 else 1
    self.conv = Conv1d(cin, cfg.conv_dim[i], cfg.conv_kernel[i], cfg.conv_stride[i], cfg.conv_bias, rngs)
    if cfg.feat_extract_norm == "layer":
      self.layer_norm = LayerNorm(cfg.conv_dim[i], 1e-5)
    elif i == 0:
      self.layer_norm = GroupNorm(cfg.conv_dim[i])
    else:
      self.layer_norm = None

  def __call__(self, x, mask):
    x = self.conv(x)
    if isinstance(self.layer_norm, GroupNorm):
      x = self.layer_norm(x, mask)
    elif self.layer_norm is not None:
      x = self.layer_norm(x)
    return _gelu(x)


class FeatureEncoder(nnx.Module):
  def __init__(self, cfg: HubertConfig, rngs: nnx.Rngs):
    self.conv_layers = nnx.List([ConvLayer(cfg, i, rngs) for i in range(len(cfg.conv_dim))])
    self.cfg = cfg

  def __call__(self, wav, lengths):
    x = wav[..., None]
    for i, layer in enumerate(self.conv_layers):
      mask = None
      if lengths is not None and i == 0:  # only the first layer normalises over time
        k, s = self.cfg.conv_kernel[0], self.cfg.conv_stride[0]
        frames = (x.shape[1] - k) // s + 1
        mask = jnp.arange(frames)[None, :] < ((lengths - k) // s + 1)[:, None]
      x = layer(x, mask)
    return x


class FeatureProjection(nnx.Module):
  def __init__(self, cfg: HubertConfig, rngs: nnx.Rngs):
    self.layer_norm = LayerNorm(cfg.conv_dim[-1], cfg.layer_norm_eps) if cfg.feat_proj_layer_norm else None
    self.projection = Linear(cfg.conv_dim[-1], cfg.hidden_size, rngs)

  def __call__(self, x):
    if self.layer_norm is not None:
      x = self.layer_norm(x)
    return self.projection(x)


class PositionalConvEmbedding(nnx.Module):
  """Grouped conv with weight norm over the kernel axis (HF `weight_norm(conv, dim=2)`), SamePad, GELU.
  weight_v [K, D/groups, D] (HF [D, D/groups, K] transposed), weight_g [K]."""

  def __init__(self, cfg: HubertConfig, rngs: nnx.Rngs):
    k, d, g = cfg.num_conv_pos_embeddings, cfg.hidden_size, cfg.num_conv_pos_embedding_groups
    v = jax.random.normal(rngs.params(), (k, d // g, d), jnp.float32) / np.sqrt(k * d // g)
    self.weight_v = nnx.Param(v)
    self.weight_g = nnx.Param(jnp.sqrt(jnp.sum(v * v, axis=(1, 2))))
    self.bias = nnx.Param(jnp.zeros((d,), jnp.float32))
    self.k, self.groups = k, g

  def __call__(self, x):
    v = self.weight_v[...]
    w = v * (self.weight_g[...] / jnp.sqrt(jnp.sum(v * v, axis=(1, 2))))[:, None, None]
    y = _conv1d(x, w, 1, ((self.k // 2, self.k // 2),), self.groups) + self.bias[...].astype(x.dtype)
    if self.k % 2 == 0:
      y = y[:, :-1]
    return _gelu(y)


class Attention(nnx.Module):
  def __init__(self, cfg: HubertConfig, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.q_proj, self.k_proj, self.v_proj, self.out_proj = (Linear(d, d, rngs) for _ in range(4))
    self.heads = cfg.num_attention_heads

  def __call__(self, x, kv_lengths):
    b, t, d = x.shape
    shape = (b, t, self.heads, d // self.heads)
    q, k, v = (p(x).reshape(shape) for p in (self.q_proj, self.k_proj, self.v_proj))
    o = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=kv_lengths)
    return self.out_proj(o.reshape(b, t, d))


class FeedForward(nnx.Module):
  def __init__(self, cfg: HubertConfig, rngs: nnx.Rngs):
    self.intermediate_dense = Linear(cfg.hidden_size, cfg.intermediate_size, rngs)
    self.output_dense = Linear(cfg.intermediate_size, cfg.hidden_size, rngs)

  def __call__(self, x):
    return self.output_dense(_gelu(self.intermediate_dense(x)))


class EncoderLayer(nnx.Module):
  def __init__(self, cfg: HubertConfig, rngs: nnx.Rngs):
    self.attention = Attention(cfg, rngs)
    self.layer_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
    self.feed_forward = FeedForward(cfg, rngs)
    self.final_layer_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
    self.stable = cfg.do_stable_layer_norm

  def __call__(self, x, kv_lengths):
    if self.stable:  # pre-LN
      x = x + self.attention(self.layer_norm(x), kv_lengths)
      return x + self.feed_forward(self.final_layer_norm(x))
    x = self.layer_norm(x + self.attention(x, kv_lengths))
    return self.final_layer_norm(x + self.feed_forward(x))


class Encoder(nnx.Module):
  def __init__(self, cfg: HubertConfig, rngs: nnx.Rngs):
    self.pos_conv_embed = PositionalConvEmbedding(cfg, rngs)
    self.layer_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
    self.layers = nnx.List([EncoderLayer(cfg, rngs) for _ in range(cfg.num_hidden_layers)])
    self.stable = cfg.do_stable_layer_norm

  def __call__(self, x, frame_lengths, num_layers: int, all_hidden: bool):
    if frame_lengths is not None:
      valid = jnp.arange(x.shape[1])[None, :] < frame_lengths[:, None]
      x = jnp.where(valid[..., None], x, 0)
    x = x + self.pos_conv_embed(x)
    if not self.stable:
      x = self.layer_norm(x)
    hidden = [x]
    for layer in self.layers[:num_layers]:
      x = layer(x, frame_lengths)
      hidden.append(x)
    last = self.layer_norm(x) if self.stable and num_layers == len(self.layers) else x
    return (hidden if all_hidden else x), last


class HubertModel(nnx.Module):
  """`model(wav [B, N], lengths [B] | None, layer=L)` -> (hidden_states[L] [B, T, D], frames [B]).

  `lengths` are valid samples per row (rows right-padded with anything); None means every row is fully valid
  (no mask: slamkit's behaviour). `layer` follows HF's `hidden_states` indexing (0 = input of the first layer;
  only layers up to `layer` are run).
  """

  def __init__(self, cfg: HubertConfig, rngs: nnx.Rngs | None = None):
    rngs = rngs or nnx.Rngs(0)
    self.cfg = cfg
    self.feature_extractor = FeatureEncoder(cfg, rngs)
    self.feature_projection = FeatureProjection(cfg, rngs)
    self.encoder = Encoder(cfg, rngs)

  def frames(self, lengths):
    """Valid frames for valid sample counts (traceable)."""
    n = lengths
    for k, s in zip(self.cfg.conv_kernel, self.cfg.conv_stride):
      n = jnp.maximum((n - k) // s + 1, 0)
    return n

  def __call__(self, wav, lengths=None, layer: int | None = None, all_hidden: bool = False):
    layer = self.cfg.num_hidden_layers if layer is None else layer
    if not 0 <= layer <= self.cfg.num_hidden_layers:
      raise ValueError(f"layer must lie in 0..{self.cfg.num_hidden_layers}, got {layer}")
    x = self.feature_extractor(wav, lengths)
    frame_lengths = None if lengths is None else self.frames(lengths)
    x = self.feature_projection(x)
    out, last = self.encoder(x, frame_lengths, layer, all_hidden)
    if frame_lengths is None:
      frame_lengths = jnp.full((x.shape[0],), x.shape[1], jnp.int32)
    if all_hidden:
      return out, last, frame_lengths
    return out, frame_lengths
