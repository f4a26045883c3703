"""Flax NNX unit HiFi-GAN (inference): unit embedding, optional duration predictor, upsampling transposed
convolutions, multi-receptive-field residual blocks, tanh output. Weight norm is folded at conversion.

Batches hold clips of different lengths: every convolution pads each clip at its own end (zeros or a
reflection of that clip, as the source model pads a lone clip), so each clip's samples equal what it gives
alone. Module names mirror textlesslib's (`conv_pre`, `ups.i`, `resblocks.j.convs1.m`, `dur_predictor.ln1`),
so the weight import is a name map. Letters: B batch, T frames (at the current rate), C channels.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from slm_jax.vocoder.config import VocoderConfig

LRELU_SLOPE = 0.1


def _pad(x, lengths, left: int, right: int, mode: str):
  """x (B,T,C) padded by `left`/`right` frames around each clip's own [0, length) span."""
  t_max = x.shape[1]
  if mode == "zeros":
    valid = jnp.arange(t_max)[None, :] < lengths[:, None]
    return jnp.pad(jnp.where(valid[..., None], x, 0), ((0, 0), (left, right), (0, 0)))
  t = jnp.arange(-left, t_max + right)[None, :]
  last = lengths[:, None] - 1
  src = jnp.abs(t)  # reflect at the start (same for every clip)
  src = jnp.where(src > last, 2 * last - src, src)  # reflect at each clip's end
  src = jnp.clip(src, 0, t_max - 1)
  return jnp.take_along_axis(x, src[..., None], axis=1)


class Conv1d(nnx.Module):
  """Stride-1 'same' convolution; kernel (K, C_in, C_out)."""

  def __init__(self, c_in: int, c_out: int, k: int, dilation: int = 1, padding: int | None = None,
               bias: bool = True, mode: str = "zeros", *, rngs: nnx.Rngs):
    self.kernel = nnx.Param(jax.random.normal(rngs.params(), (k, c_in, c_out)) * 0.01)
    self.bias = nnx.Param(jnp.zeros((c_out,))) if bias else None
    self.dilation, self.mode = dilation, mode
    self.padding = dilation * (k - 1) // 2 if padding is None else padding

  def __call__(self, x, lengths):
    x = _pad(x, lengths, self.padding, self.padding, self.mode)
    y = jax.lax.conv_general_dilated(x, self.kernel[...], (1,), "VALID", rhs_dilation=(self.dilation,),
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    return y if self.bias is None else y + self.bias[...]


class ConvTranspose1d(nnx.Module):
  """torch ConvTranspose1d(stride u, padding (k-u)//2) as one matmul plus an overlap-add; kernel (C_in, K, C_out)."""

  def __init__(self, c_in: int, c_out: int, k: int, u: int, *, rngs: nnx.Rngs):
    self.kernel = nnx.Param(jax.random.normal(rngs.params(), (c_in, k, c_out)) * 0.01)
    self.bias = nnx.Param(jnp.zeros((c_out,)))
    self.k, self.u, self.padding = k, u, (k - u) // 2

  def __call__(self, x, lengths):
    b, t, _ = x.shape
    k, u, p = self.k, self.u, self.padding
    valid = jnp.arange(t)[None, :] < lengths[:, None]
    x = jnp.where(valid[..., None], x, 0)  # a lone clip has nothing after its end
    m = -(-k // u)
    w = jnp.pad(self.kernel[...], ((0, 0), (0, m * u - k), (0, 0)))
    y = jnp.einsum("btc,cko->btko", x, w).reshape(b, t, m, u, -1)
    full = sum(jnp.pad(y[:, :, i], ((0, 0), (i, m - 1 - i), (0, 0), (0, 0))) for i in range(m))
    full = full.reshape(b, (t + m - 1) * u, -1)
    n_out = (t - 1) * u - 2 * p + k
    return full[:, p:p + n_out] + self.bias[...], (lengths - 1) * u - 2 * p + k


class ResBlock(nnx.Module):
  """HiFi-GAN residual block: type "1" (convs1 dilated, convs2 dilation 1) or "2" (convs)."""

  def __init__(self, ch: int, k: int, dilations, kind: str, mode: str, *, rngs: nnx.Rngs):
    self.kind = kind
    if kind == "1":
      self.convs1 = nnx.List([Conv1d(ch, ch, k, d, mode=mode, rngs=rngs) for d in dilations])
      self.convs2 = nnx.List([Conv1d(ch, ch, k, 1, mode=mode, rngs=rngs) for _ in dilations])
    else:
      self.convs = nnx.List([Conv1d(ch, ch, k, d, mode=mode, rngs=rngs) for d in dilations])

  def __call__(self, x, lengths):
    if self.kind == "1":
      for c1, c2 in zip(self.convs1, self.convs2):
        xt = c2(jax.nn.leaky_relu(c1(jax.nn.leaky_relu(x, LRELU_SLOPE), lengths), LRELU_SLOPE), lengths)
        x = xt + x
    else:
      for c in self.convs:
        x = c(jax.nn.leaky_relu(x, LRELU_SLOPE), lengths) + x
    return x


class DurationPredictor(nnx.Module):
  """conv, ReLU, [LayerNorm], (dropout), conv, ReLU, [LayerNorm], (dropout), linear -> log(1 + duration)."""

  def __init__(self, cfg: VocoderConfig, *, rngs: nnx.Rngs):
    h, k, (p1, p2), mode = cfg.dur_hidden_dim, cfg.dur_kernel_size, cfg.dur_paddings, cfg.padding_mode
    self.conv1 = Conv1d(cfg.embedding_dim, h, k, padding=p1, mode=mode, rngs=rngs)
    self.conv2 = Conv1d(h, h, k, padding=p2, mode=mode, rngs=rngs)
    self.ln1 = nnx.LayerNorm(h, epsilon=1e-5, rngs=rngs) if cfg.dur_layer_norm else None
    self.ln2 = nnx.LayerNorm(h, epsilon=1e-5, rngs=rngs) if cfg.dur_layer_norm else None
    self.proj = nnx.Linear(h, 1, rngs=rngs)

  def __call__(self, x, lengths):
    x = jax.nn.relu(self.conv1(x, lengths))
    x = self.ln1(x) if self.ln1 is not None else x
    x = jax.nn.relu(self.conv2(x, lengths))
    x = self.ln2(x) if self.ln2 is not None else x
    return self.proj(x)[..., 0]


class UnitHifiGan(nnx.Module):
  def __init__(self, cfg: VocoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    mode, ch0 = cfg.padding_mode, cfg.upsample_initial_channel
    self.embedding = nnx.Embed(cfg.num_embeddings, cfg.embedding_dim, rngs=rngs)
    self.dur_predictor = DurationPredictor(cfg, rngs=rngs) if cfg.dur_predictor else None
    self.conv_pre = Conv1d(cfg.embedding_dim, ch0, 7, mode=mode, rngs=rngs)
    self.ups = nnx.List([ConvTranspose1d(ch0 // 2**i, ch0 // 2**(i + 1), k, u, rngs=rngs)
                         for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))])
    self.resblocks = nnx.List([
        ResBlock(ch0 // 2**(i + 1), k, d, cfg.resblock_type, mode, rngs=rngs)
        for i in range(len(cfg.upsample_rates))
        for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)])
    ch = ch0 // 2**len(cfg.upsample_rates)
    self.conv_post = Conv1d(ch, 1, 7, bias=cfg.conv_post_bias, mode=mode, rngs=rngs)

  def log_durations(self, units, lengths):
    """units (B,T) int, lengths (B,) -> predicted log(1 + duration) (B,T)."""
    return self.dur_predictor(self.embedding(units), lengths)

  def __call__(self, units, lengths):
    """units (B,T) int frame-rate units, lengths (B,) -> waveform (B, num_samples(T)) in [-1, 1]."""
    x = self.conv_pre(self.embedding(units), lengths)
    nk = len(self.cfg.resblock_kernel_sizes)
    for i, up in enumerate(self.ups):
      x, lengths = up(jax.nn.leaky_relu(x, LRELU_SLOPE), lengths)
      x = sum(self.resblocks[i * nk + j](x, lengths) for j in range(nk)) / nk
    x = self.conv_post(jax.nn.leaky_relu(x, 0.01), lengths)
    return jnp.tanh(x[..., 0])
