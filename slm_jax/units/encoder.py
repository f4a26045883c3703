"""Batched HuBERT feature extraction on the accelerator: padding, masks or slamkit's unmasked padding, buckets,
data parallelism over the local devices. `encode_batch` has the contract of `extract.Encoder`."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from slm_jax.units import audio as audio_lib
from slm_jax.units.hubert import HubertModel


def bucket_length(n: int, min_step: int = audio_lib.SAMPLE_RATE) -> int:
  """Padded length for `n` samples: 4 buckets per octave (<= 25% padding), so few shapes are compiled."""
  step = max(min_step, 2 ** max(0, int(math.log2(max(n, 1))) - 2))
  return int(math.ceil(n / step) * step)


class HubertEncoder:
  """Frames of HF `hidden_states[layer]` for a list of waveforms.

  Default: every clip is padded by `edge_pad` zeros on both sides (as slamkit, so frames = len // 640) and
  masked, so its frames do not depend on its batch mates. `slamkit_padding=True` reproduces slamkit instead: the
  batch is zero-padded to its longest clip, then by `edge_pad` on both sides, run WITHOUT a mask, and each clip
  keeps ceil(len_i / len_max * T) frames.
  """
  name = "hubert"

  def __init__(self, model: HubertModel, layer: int = 11, slamkit_padding: bool = False,
               edge_pad: int = audio_lib.EDGE_PAD, dtype=jnp.float32, devices=None):
    self.cfg = model.cfg
    self.layer = layer
    self.slamkit_padding = slamkit_padding
    self.edge_pad = edge_pad
    self.dtype = jnp.dtype(dtype)
    self.graphdef, state = nnx.split(model)
    devices = list(devices or jax.local_devices())
    self.mesh = Mesh(np.array(devices), ("data",))
    self.state = jax.device_put(state, NamedSharding(self.mesh, P()))
    self._row_sharding = NamedSharding(self.mesh, P("data"))

  @property
  def frame_seconds(self) -> float:
    return float(np.prod(self.cfg.conv_stride)) / audio_lib.SAMPLE_RATE

  def num_frames(self, num_samples):
    return audio_lib.num_frames(num_samples, self.cfg.conv, self.edge_pad)

  def encode_batch(self, wavs: list[np.ndarray]):
    """-> (features [B', T, D] on the device (rows beyond len(wavs) are filler), valid frames [len(wavs)])."""
    n = len(wavs)
    lens = np.array([len(w) for w in wavs], np.int64)
    ndev = self.mesh.devices.size
    rows = int(math.ceil(n / ndev) * ndev)
    pad = self.edge_pad
    if self.slamkit_padding:
      width = int(lens.max()) + 2 * pad
    else:
      width = bucket_length(int(lens.max()) + 2 * pad)
    batch = np.zeros((rows, width), np.float32)
    for i, w in enumerate(wavs):
      batch[i, pad:pad + len(w)] = w
    x = jax.device_put(batch, self._row_sharding)
    run = functools.partial(_forward, self.graphdef, self.dtype, self.layer, self.state, x)
    if self.slamkit_padding:
      feats, _ = run(None)
      return feats, np.ceil(lens / lens.max() * feats.shape[1]).astype(np.int64)
    valid = np.full(rows, width, np.int32)  # filler rows count as fully valid (no empty softmax)
    valid[:n] = lens + 2 * pad
    feats, _ = run(jax.device_put(valid, self._row_sharding))
    # frame counts from the host formula (same values as the model's), so nothing waits for the device here
    return feats, audio_lib.conv_out_length(lens + 2 * pad, *self.cfg.conv)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _forward(graphdef, dtype, layer, state, wav, lengths):
  """hidden_states[layer] [B, T, D] float32 and valid frames [B]; `lengths` None = no mask."""
  if dtype != jnp.float32:
    state = jax.tree.map(lambda a: a.astype(dtype), state)
  model = nnx.merge(graphdef, state)
  hidden, frames = model(wav.astype(dtype), lengths, layer=layer)
  return hidden.astype(jnp.float32), frames
