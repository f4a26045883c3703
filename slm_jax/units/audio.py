"""Audio in (docs/reference.md §1): mono (mean of channels), 16 kHz, float in [-1, 1], no normalisation; frame arithmetic."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

SAMPLE_RATE = 16000
EDGE_PAD = 40  # samples of zeros on both sides before the encoder (slamkit / TWIST); makes frames = len // hop
# Convolutional feature extractor of slprl/mhubert-base-25hz (7 layers of hubert-base plus one more stride-2
# layer: 640 samples per frame). Its frame counts on the slamkit fixture are 352 and 398, as the real units say.
MHUBERT_25HZ_CONV = ((10, 3, 3, 3, 3, 2, 2, 2), (5, 2, 2, 2, 2, 2, 2, 2))
HUBERT_50HZ_CONV = ((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))


class AudioError(ValueError):
  """An audio file that cannot be read or holds no samples."""


def find_audio(audio_dir: str, ext: str = "flac") -> list[str]:
  """All files `*.{ext}` under `audio_dir`, recursively, sorted (the order every process agrees on)."""
  if not os.path.isdir(audio_dir):
    raise FileNotFoundError(f"audio folder {audio_dir} does not exist")
  exts = tuple("." + e.lstrip(".").lower() for e in ext.split(","))
  out = []
  for root, _, files in os.walk(audio_dir, followlinks=True):
    out.extend(os.path.join(root, f) for f in files if f.lower().endswith(exts))
  return sorted(out)


def load_audio(path: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """float32 mono waveform at `sample_rate` (librosa: mean of channels, soxr resampling). Raises AudioError."""
  import warnings

  import librosa  # imported lazily: its first import is slow
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # librosa's audioread fallback warnings; failures are raised below
      wav, _ = librosa.load(path, sr=sample_rate, mono=True)
  except Exception as e:  # librosa / soundfile / audioread raise many types
    raise AudioError(f"{path}: cannot read audio ({type(e).__name__}: {e})") from e
  if wav.size == 0:
    raise AudioError(f"{path}: no samples")
  if not np.all(np.isfinite(wav)):
    raise AudioError(f"{path}: non-finite samples")
  return np.ascontiguousarray(wav, dtype=np.float32)


def audio_num_samples(path: str, sample_rate: int = SAMPLE_RATE) -> int:
  """Length after resampling to `sample_rate`, from the header only (0 if the header cannot be read)."""
  import soundfile as sf
  try:
    info = sf.info(path)
  except Exception:  # not a soundfile format (mp3 etc.): let load_audio decide later
    return 0
  return int(np.ceil(info.frames * sample_rate / info.samplerate))  # librosa.resample's output length


def conv_out_length(n: int | np.ndarray, kernels: Sequence[int], strides: Sequence[int]):
  """Frames out of a stack of valid 1-D convolutions (HF `_get_feat_extract_output_lengths`)."""
  n = np.asarray(n, dtype=np.int64)
  for k, s in zip(kernels, strides):
    n = np.maximum((n - k) // s + 1, 0)
  return n


def num_frames(num_samples: int | np.ndarray, conv=MHUBERT_25HZ_CONV, edge_pad: int = EDGE_PAD):
  """Encoder frames for a clip of `num_samples` (after `edge_pad` zeros on each side)."""
  return conv_out_length(np.asarray(num_samples) + 2 * edge_pad, *conv)


def frame_seconds(conv=MHUBERT_25HZ_CONV, sample_rate: int = SAMPLE_RATE) -> float:
  return float(np.prod(conv[1])) / sample_rate
