"""Where the units of a benchmark's audio come from: a slamkit features JSONL keyed by file stem, or the audio.

Evaluation needs no HuBERT weights when the units exist. Units of several files are concatenated for S->S
cross-modal items: from audio, the waveforms are joined before extraction (as slamkit does); from a units file,
the unit sequences are joined and a repeat at the junction is merged (what deduplication of the joined audio
would most likely give).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from slm_jax.jsonl import iter_records


class UnitsMissing(KeyError):
  def __str__(self):
    return str(self.args[0])


class UnitsFileError(ValueError):
  pass


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _join(parts: list[np.ndarray]) -> np.ndarray:
  out: list[int] = []
  for p in parts:
    p = [int(u) for u in p]
    if out and p and out[-1] == p[0]:
      p = p[1:]
    out.extend(p)
  return np.asarray(out, np.int64)


class UnitsFile:
  """slamkit features JSONL (`{"units": [...], "duration": [...], "file_name": ...}`) keyed by file stem."""
  kind = "units_file"

  def __init__(self, path: str):
    self.path = path
    self._units: dict[str, np.ndarray] = {}
    lines: dict[str, int] = {}
    for n, rec in iter_records(path, UnitsFileError, what="units file"):
      for key in ("units", "file_name"):
        if key not in rec:
          raise UnitsFileError(f"{path} line {n}: no field {key!r} (slamkit features records have "
                               "units, duration, file_name)")
      s = _stem(rec["file_name"])
      if s in lines:
        raise UnitsFileError(f"{path} line {n}: stem {s!r} (file_name {rec['file_name']!r}) already on line "
                             f"{lines[s]}; stems must be unique")
      lines[s] = n
      units = np.asarray(rec["units"], np.int64)
      if units.ndim != 1:
        raise UnitsFileError(f"{path} line {n}: field 'units' is not a flat list")
      self._units[s] = units

  def __contains__(self, stem: str) -> bool:
    return stem in self._units

  def __len__(self) -> int:
    return len(self._units)

  def stems(self) -> list[str]:
    return sorted(self._units)

  def has(self, path: str) -> bool:
    return _stem(path) in self._units

  def units(self, paths: Sequence[str], needed_by: str = "") -> np.ndarray:
    parts = []
    for p in paths:
      s = _stem(p)
      if s not in self._units:
        raise UnitsMissing(f"units file {self.path} has no entry for stem {s!r}"
                           + (f" (needed by {needed_by})" if needed_by else ""))
      parts.append(self._units[s])
    return _join(parts)


class AudioUnits:
  """Units extracted from audio files with a `slm_jax.units` encoder and k-means centroids (cached per path)."""
  kind = "audio"

  def __init__(self, encoder, centroids: np.ndarray, batch_size: int = 8):
    from slm_jax.units import audio as audio_lib
    self.encoder, self.centroids, self.batch_size = encoder, np.asarray(centroids), batch_size
    self._audio = audio_lib
    self._cache: dict[tuple, np.ndarray] = {}

  def has(self, path: str) -> bool:
    return os.path.isfile(path)

  def prefetch(self, groups: Sequence[Sequence[str]]) -> None:
    """Extracts all groups (tuples of paths, joined before extraction) in batches."""
    from slm_jax.units import dedup as dedup_lib
    from slm_jax.units import extract as extract_lib
    todo = [tuple(g) for g in dict.fromkeys(tuple(g) for g in groups) if tuple(g) not in self._cache]
    for i in range(0, len(todo), self.batch_size):
      chunk = todo[i:i + self.batch_size]
      wavs = []
      for g in chunk:
        for p in g:
          if not os.path.isfile(p):
            raise FileNotFoundError(f"audio file {p} does not exist")
        wavs.append(np.concatenate([self._audio.load_audio(p) for p in g]))
      frames = extract_lib.units_for_batch(self.encoder, self.centroids, wavs)
      for g, f in zip(chunk, frames):
        self._cache[g] = dedup_lib.dedup(f)[0]

  def units(self, paths: Sequence[str], needed_by: str = "") -> np.ndarray:
    key = tuple(paths)
    if key not in self._cache:
      self.prefetch([key])
    return self._cache[key]

  def units_of_waveforms(self, wavs: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(units, durations) of each 16 kHz waveform (e.g. prompts cut to their first seconds)."""
    from slm_jax.units import dedup as dedup_lib
    from slm_jax.units import extract as extract_lib
    out = []
    for i in range(0, len(wavs), self.batch_size):
      frames = extract_lib.units_for_batch(self.encoder, self.centroids, list(wavs[i:i + self.batch_size]))
      out += [dedup_lib.dedup(f) for f in frames]
    return out


def make_audio_units(encoder: str, kmeans: str, batch_size: int = 8, trust_pickle: bool = False,
                     layer: int = 11) -> AudioUnits:
  """AudioUnits from an encoder ('mfcc' stand-in, or a HF HubertModel folder, output of `layer`) and k-means."""
  if not encoder or not kmeans:
    raise ValueError("audio input needs --encoder and --kmeans (or give precomputed units with --units)")
  from slm_jax.units import kmeans as kmeans_lib
  centroids = kmeans_lib.load_centroids(kmeans, trust_pickle=trust_pickle)
  if encoder == "mfcc":
    from slm_jax.units.mfcc import MfccEncoder
    enc = MfccEncoder()
  else:
    from slm_jax.units.encoder import HubertEncoder
    from slm_jax.units.hubert_import import load_hubert
    enc = HubertEncoder(load_hubert(encoder), layer=layer)
  return AudioUnits(enc, centroids, batch_size)
