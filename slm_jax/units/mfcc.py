"""A weight-free STAND-IN encoder: MFCCs with deltas at 25 frames per second. NOT HuBERT.

Same framing as mHuBERT-25Hz (one frame per 640 samples, the same frame count for every clip length, windows
centred where the HuBERT frames' receptive fields are), so units made with it have the shape and timing of real
units. Features follow HuBERT's first-iteration recipe (13 cepstra + deltas + delta-deltas, no normalisation);
k-means on them is fitted by `tools/extract_units.py --fit_kmeans=K`. Their units carry far less linguistic
content than HuBERT's: use them for demos and tests only.
"""
from __future__ import annotations

import numpy as np

from slm_jax.units import audio as audio_lib

N_MFCC = 13
N_FFT = 1024


class MfccEncoder:
  """Host-side (librosa) stand-in encoder; `encode_batch` has the same contract as the HuBERT encoder's."""
  name = "mfcc (stand-in, not HuBERT)"
  conv = audio_lib.MHUBERT_25HZ_CONV
  dim = 3 * N_MFCC

  def __init__(self, sample_rate: int = audio_lib.SAMPLE_RATE):
    self.sample_rate = sample_rate
    kernels, strides = self.conv
    self.hop = int(np.prod(strides))
    rf = 1
    for k, s in zip(reversed(kernels), reversed(strides)):
      rf = (rf - 1) * s + k
    # HuBERT frame j sees padded samples [hop*j, hop*j + rf), i.e. clip samples centred on hop*j - EDGE_PAD + rf/2.
    self.left = N_FFT // 2 - (rf // 2 - audio_lib.EDGE_PAD)

  @property
  def frame_seconds(self) -> float:
    return self.hop / self.sample_rate

  def num_frames(self, num_samples):
    return audio_lib.num_frames(num_samples, self.conv)

  def features(self, wav: np.ndarray) -> np.ndarray:
    """[T, 39] float32 for one clip, T = num_frames(len(wav))."""
    import librosa
    n = int(self.num_frames(len(wav)))
    if n <= 0:
      return np.zeros((0, self.dim), np.float32)
    need = (n - 1) * self.hop + N_FFT
    y = np.zeros(max(need, self.left + len(wav)), np.float32)
    y[self.left:self.left + len(wav)] = wav
    m = librosa.feature.mfcc(y=y, sr=self.sample_rate, n_mfcc=N_MFCC, n_fft=N_FFT, hop_length=self.hop,
                             n_mels=40, center=False)[:, :n]
    d1 = librosa.feature.delta(m, width=5, order=1, mode="nearest")
    d2 = librosa.feature.delta(m, width=5, order=2, mode="nearest")
    return np.concatenate([m, d1, d2], axis=0).T.astype(np.float32)

  def encode_batch(self, wavs: list[np.ndarray]):
    """-> (features [B, T_max, D] float32, lengths [B] int)."""
    feats = [self.features(w) for w in wavs]
    lengths = np.array([f.shape[0] for f in feats], np.int64)
    t = int(lengths.max(initial=0))
    step = max(32, 2 ** max(0, t.bit_length() - 3))  # 4 padded lengths per octave: few jit shapes downstream
    out = np.zeros((len(feats), max(step, -(-t // step) * step), self.dim), np.float32)
    for i, f in enumerate(feats):
      out[i, :f.shape[0]] = f
    return out, lengths
