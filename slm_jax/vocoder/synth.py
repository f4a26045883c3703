"""Units in, 16 kHz waveforms out: batches of clips sorted by length, padded to length buckets (one compile
per bucket), durations from the duration predictor when the vocoder has one and none are given."""
from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from slm_jax.vocoder import model as vm
from slm_jax.vocoder.config import PARAMS_NAME, VocoderConfig


class Vocoder:
  def __init__(self, cfg: VocoderConfig, params: dict, *, batch_size: int = 8, bucket_frames: int = 50,
               source: str = "params"):
    self.cfg, self.batch_size, self.bucket_frames = cfg, batch_size, bucket_frames
    model = vm.UnitHifiGan(cfg, rngs=nnx.Rngs(0))
    self.graphdef, state = nnx.split(model)
    flat = {".".join(str(p) for p in path): v for path, v in nnx.to_flat_state(state)}
    missing, unexpected = sorted(set(flat) - set(params)), sorted(set(params) - set(flat))
    if missing or unexpected:
      raise ValueError(f"{source}: parameters do not match {cfg.source_format or 'the'} config: missing {missing}, "
                       f"unexpected {unexpected}")
    for key, var in flat.items():
      if tuple(params[key].shape) != tuple(var.shape):
        raise ValueError(f"{source}: {key} has shape {params[key].shape}, expected {var.shape}")
      var.set_value(jnp.asarray(params[key], jnp.float32))
    self.state = state
    graphdef = self.graphdef
    self._wave = jax.jit(lambda s, u, n: nnx.merge(graphdef, s)(u, n))
    self._logdur = jax.jit(lambda s, u, n: nnx.merge(graphdef, s).log_durations(u, n))

  @classmethod
  def load(cls, vocoder_dir: str, **kw) -> "Vocoder":
    cfg = VocoderConfig.load(vocoder_dir)
    path = os.path.join(vocoder_dir, PARAMS_NAME)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path} does not exist: convert a checkpoint with tools/convert_vocoder.py first")
    with np.load(path) as z:
      params = {k: z[k] for k in z.files}
    return cls(cfg, params, source=path, **kw)

  @property
  def sample_rate(self) -> int:
    return self.cfg.sample_rate

  def _batches(self, seqs: Sequence[np.ndarray], min_len: int):
    """(indices, units (B,T), lengths (B,)) batches of similar length, T rounded up to a bucket."""
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    for start in range(0, len(order), self.batch_size):
      idx = order[start:start + self.batch_size]
      t = max(len(seqs[i]) for i in idx)
      t = max(-(-t // self.bucket_frames) * self.bucket_frames, min_len)
      units = np.zeros((self.batch_size, t), np.int32)
      lengths = np.full(self.batch_size, min_len, np.int32)
      for row, i in enumerate(idx):
        units[row, :len(seqs[i])] = seqs[i]
        lengths[row] = len(seqs[i])
      yield idx, units, lengths

  def _check(self, seqs, min_len: int, what: str):
    out = []
    for n, s in enumerate(seqs):
      s = np.asarray(s).reshape(-1)
      if s.size < min_len:
        raise ValueError(f"clip {n}: {s.size} {what}, this vocoder needs at least {min_len}")
      if s.size and (s.min() < 0 or s.max() >= self.cfg.num_embeddings):
        raise ValueError(f"clip {n}: unit ids must lie in [0, {self.cfg.num_embeddings}), got "
                         f"[{s.min()}, {s.max()}]")
      out.append(s.astype(np.int32))
    return out

  def durations(self, units: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Predicted frames per unit: clamp(round(exp(log_dur) - 1), min=1), as textlesslib / speechbrain."""
    if not self.cfg.dur_predictor:
      raise ValueError("this vocoder has no duration predictor: give durations")
    min_len = self.cfg.dur_paddings[0] + 1 if self.cfg.padding_mode == "reflect" else 1
    seqs = self._check(units, min_len, "units")
    out = [None] * len(seqs)
    for idx, u, n in self._batches(seqs, min_len):
      log_dur = np.asarray(self._logdur(self.state, u, n))
      for row, i in enumerate(idx):
        d = np.round(np.exp(log_dur[row, :len(seqs[i])]) - 1)
        out[i] = np.maximum(d, 1).astype(np.int64)
    return out

  def synthesize(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Frame-rate units (one id per frame) -> float32 waveforms."""
    seqs = self._check(frames, self.cfg.min_frames(), "frames")
    out = [None] * len(seqs)
    for idx, u, n in self._batches(seqs, self.cfg.min_frames()):
      wav = np.asarray(self._wave(self.state, u, n))
      for row, i in enumerate(idx):
        out[i] = wav[row, :self.cfg.num_samples(len(seqs[i]))].astype(np.float32)
    return out

  def __call__(self, units: Sequence, durations: Sequence | None = None) -> list[np.ndarray]:
    """Units with given durations (frames per unit), or durations from the predictor when None."""
    if durations is None:
      durations = self.durations(units) if self.cfg.dur_predictor else [None] * len(units)
    frames = [np.asarray(u) if d is None else np.repeat(np.asarray(u), np.asarray(d)) for u, d in
              zip(units, durations)]
    return self.synthesize(frames)


def write_wav(path: str, wav: np.ndarray, sample_rate: int) -> None:
  import soundfile as sf
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  sf.write(path, np.asarray(wav, np.float32), sample_rate, subtype="FLOAT")
