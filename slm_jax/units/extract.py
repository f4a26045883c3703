"""Audio folder -> deduplicated units in slamkit features JSONL (docs/reference.md §1, §3).

Pipeline: find files, read their lengths from the headers, sort longest first (slamkit's order), group into
batches, decode the next batches with librosa in background threads while the encoder runs, assign k-means
units on the device, deduplicate, append one JSON line per file. A rerun skips files already in the output.
Several processes (hosts) each take every n-th file and write their own shard.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import time
from typing import Callable, Iterable, Protocol, Sequence

import jax
import numpy as np

from slm_jax.units import audio as audio_lib
from slm_jax.units import dedup as dedup_lib
from slm_jax.units import kmeans as kmeans_lib

log = logging.getLogger(__name__)


class Encoder(Protocol):
  name: str
  frame_seconds: float

  def num_frames(self, num_samples): ...

  def encode_batch(self, wavs: list[np.ndarray]):
    """-> (features [B, T, D] (numpy or jax), valid frames per clip [B])."""


@dataclasses.dataclass
class Stats:
  files: int = 0  # written this run
  skipped_done: int = 0  # already in the output
  bad: list = dataclasses.field(default_factory=list)  # (path, reason)
  audio_seconds: float = 0.0
  wall_seconds: float = 0.0

  @property
  def rtf(self) -> float:
    """Real-time factor as speed: seconds of audio per second of wall time."""
    return self.audio_seconds / max(self.wall_seconds, 1e-9)


def dispatch_batch(encoder: Encoder, centroids, wavs: list[np.ndarray]):
  """Starts encoder + k-means on the device and returns at once (JAX dispatch is asynchronous)."""
  feats, lengths = encoder.encode_batch(wavs)
  return kmeans_lib.assign(feats, centroids), lengths


def fetch_batch(pending) -> list[np.ndarray]:
  units, lengths = pending
  units = np.asarray(units)  # waits for the device
  return [units[i, :int(n)] for i, n in enumerate(lengths)]


def units_for_batch(encoder: Encoder, centroids, wavs: list[np.ndarray]) -> list[np.ndarray]:
  """Frame units [T_i] for each waveform (before deduplication)."""
  return fetch_batch(dispatch_batch(encoder, centroids, wavs))


def shard_path(out: str, index: int, count: int) -> str:
  if count <= 1:
    return out
  root, ext = os.path.splitext(out)
  return f"{root}-{index:05d}-of-{count:05d}{ext or '.jsonl'}"


def read_done(path: str) -> set[str]:
  """file_name values already written; a torn last line (killed mid-write) is cut off."""
  done = set()
  if not os.path.exists(path):
    return done
  with open(path, "rb+") as f:
    data = f.read()
    end = data.rfind(b"\n") + 1
    if end != len(data):
      log.warning("%s: dropping a partial last line (%d bytes) from an interrupted run", path, len(data) - end)
      f.truncate(end)
  for i, line in enumerate(data[:end].splitlines()):
    if line.strip():
      try:
        done.add(json.loads(line)["file_name"])
      except (ValueError, KeyError) as e:
        raise ValueError(f"{path}:{i + 1}: not a features record ({e}); move the file away to start over") from e
  return done


def plan_batches(paths: Sequence[str], lengths: Sequence[int], batch_size: int,
                 max_batch_samples: int | None = None) -> list[list[int]]:
  """Indices grouped longest first (slamkit's order) into batches of <= batch_size clips and, if given, at most
  `max_batch_samples` samples once padded to the batch's longest clip."""
  order = sorted(range(len(paths)), key=lambda i: (-lengths[i], paths[i]))
  batches, cur = [], []
  for i in order:
    if cur and (len(cur) >= batch_size or
                (max_batch_samples and (len(cur) + 1) * lengths[cur[0]] > max_batch_samples)):
      batches.append(cur)
      cur = []
    cur.append(i)
  if cur:
    batches.append(cur)
  return batches


def _load_batch(paths: list[str], sample_rate: int):
  out = []
  for p in paths:
    try:
      out.append((p, audio_lib.load_audio(p, sample_rate), None))
    except audio_lib.AudioError as e:
      out.append((p, None, str(e)))
  return out


def _check_length(item, encoder: Encoder, sample_rate: int):
  """(path, None, reason) for audio too short for one encoder frame (it would be a record without units)."""
  p, wav, err = item
  if err is None and int(encoder.num_frames(len(wav))) < 1:
    return p, None, f"{p}: {len(wav)} samples ({len(wav) / sample_rate:.4f} s) is shorter than one encoder frame"
  return item


def extract_files(paths: Sequence[str], encoder: Encoder, centroids: np.ndarray, out_path: str, *,
                  batch_size: int = 8, max_batch_seconds: float = 600.0, strict: bool = False,
                  file_name: Callable[[str], str] = lambda p: p, sample_rate: int = audio_lib.SAMPLE_RATE,
                  progress: bool = True, loader_threads: int = 2) -> Stats:
  """Writes one features record per readable file of `paths` to `out_path` (appending; done files skipped)."""
  stats = Stats()
  done = read_done(out_path)
  todo = [p for p in paths if file_name(p) not in done]
  stats.skipped_done = len(paths) - len(todo)
  if not todo:
    return stats
  lengths = [audio_lib.audio_num_samples(p, sample_rate) for p in todo]
  batches = plan_batches(todo, lengths, batch_size, int(max_batch_seconds * sample_rate))
  centroids_dev = jax.device_put(np.asarray(centroids, np.float32))
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  bar = _progress(len(todo), progress)
  t0 = time.perf_counter()
  in_flight = None  # (paths, seconds, dispatched units): written once the next batch is on its way

  def finish(job):
    paths, seconds, pending = job
    lines = [json.dumps(dedup_lib.features_record(u, file_name(p))) + "\n"
             for p, u in zip(paths, fetch_batch(pending))]
    out.write("".join(lines))
    out.flush()
    stats.files += len(paths)
    stats.audio_seconds += seconds
    stats.wall_seconds = time.perf_counter() - t0
    if bar is not None:
      bar.update(len(paths))
      bar.set_postfix_str(f"{stats.rtf:.1f}x real time, {len(stats.bad)} unreadable")

  with open(out_path, "a", encoding="utf-8") as out, \
      concurrent.futures.ThreadPoolExecutor(max(1, loader_threads)) as pool:
    pending = [pool.submit(_load_batch, [todo[i] for i in b], sample_rate) for b in batches[:2]]
    for bi in range(len(batches)):
      loaded = [_check_length(item, encoder, sample_rate) for item in pending.pop(0).result()]
      if bi + 2 < len(batches):
        pending.append(pool.submit(_load_batch, [todo[i] for i in batches[bi + 2]], sample_rate))
      good = [(p, w) for p, w, err in loaded if err is None]
      for p, _, err in loaded:
        if err is not None:
          if strict:
            raise audio_lib.AudioError(err)
          log.warning("skipped: %s", err)
          stats.bad.append((p, err))
          if bar is not None:
            bar.update(1)
      job = None
      if good:
        job = ([p for p, _ in good], sum(len(w) for _, w in good) / sample_rate,
               dispatch_batch(encoder, centroids_dev, [w for _, w in good]))
      if in_flight is not None:
        finish(in_flight)
      in_flight = job
    if in_flight is not None:
      finish(in_flight)
  if bar is not None:
    bar.close()
  stats.wall_seconds = time.perf_counter() - t0
  return stats


def collect_features(paths: Sequence[str], encoder: Encoder, max_frames: int, seed: int = 0,
                     sample_rate: int = audio_lib.SAMPLE_RATE, batch_size: int = 8) -> np.ndarray:
  """[N, D] encoder frames from a seeded random subset of the files (about `max_frames` rows), to fit k-means."""
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(paths))
  rows, total = [], 0
  for start in range(0, len(order), batch_size):
    chunk = [paths[i] for i in order[start:start + batch_size]]
    wavs = [w for _, w, err in _load_batch(chunk, sample_rate) if err is None]
    if not wavs:
      continue
    feats, lengths = encoder.encode_batch(wavs)
    feats = np.asarray(feats)
    for i, n in enumerate(lengths):
      rows.append(feats[i, :int(n)])
      total += int(n)
    if total >= max_frames:
      break
  if not rows:
    raise ValueError("no readable audio to fit k-means on")
  return np.concatenate(rows)[:max_frames]


def _progress(total: int, enabled: bool):
  from slm_jax import console
  return console.bar(total=total, desc="extracting", unit="file") if enabled else None


def process_share(paths: Sequence[str], index: int, count: int) -> list[str]:
  """This process's files: every `count`-th of the globally sorted list, starting at `index`."""
  return list(paths[index::count])


def summary(stats: Stats, out_path: str) -> str:
  return (f"{out_path}: {stats.files} files written ({stats.audio_seconds / 3600:.2f} h of audio, "
          f"{stats.rtf:.1f}x real time), {stats.skipped_done} already done, "
          f"{len(stats.bad)} skipped (unreadable, empty or shorter than one frame)"
          + "".join(f"\n  skipped {reason}" for _, reason in stats.bad[:20])
          + (f"\n  ... and {len(stats.bad) - 20} more" if len(stats.bad) > 20 else ""))


def iter_features(path: str) -> Iterable[dict]:
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        yield json.loads(line)


# ---------------------------------------------------------------------------------------------------------------
# The whole tool (tools/extract_units.py): encoder + k-means + this process's share of the files
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RunConfig:
  audio_dir: str
  out: str
  ext: str = "flac"
  encoder: str = "mfcc"  # "mfcc" (stand-in) or a HF HubertModel folder
  layer: int = 11
  kmeans: str | None = None  # centroids (.npy, or a trusted joblib pickle); output path with fit_kmeans
  fit_kmeans: int = 0  # fit this many centroids on the audio first (saved to `kmeans`)
  fit_max_frames: int = 200_000
  trust_pickled_kmeans: bool = False
  batch_size: int = 8
  max_batch_seconds: float = 600.0
  slamkit_padding: bool = False
  dtype: str = "float32"
  strict: bool = False
  seed: int = 0
  process_index: int = 0
  process_count: int = 1
  progress: bool = True


def make_encoder(cfg: RunConfig):
  if cfg.encoder == "mfcc":
    if cfg.slamkit_padding:
      raise ValueError("--slamkit_padding applies to the HuBERT encoder; the mfcc stand-in has no batch effects")
    from slm_jax.units.mfcc import MfccEncoder
    return MfccEncoder()
  from slm_jax.units.encoder import HubertEncoder
  from slm_jax.units.hubert_import import load_hubert
  return HubertEncoder(load_hubert(cfg.encoder), layer=cfg.layer, slamkit_padding=cfg.slamkit_padding,
                       dtype=cfg.dtype)


def run(cfg: RunConfig) -> Stats:
  files = find_audio_or_fail(cfg.audio_dir, cfg.ext)
  encoder = make_encoder(cfg)
  if cfg.fit_kmeans:
    if not cfg.kmeans:
      raise ValueError("--fit_kmeans needs --kmeans=PATH.npy to save the centroids to")
    if cfg.process_count > 1:
      raise ValueError("fit k-means in one process first (--fit_kmeans), then extract on many hosts")
    if os.path.exists(cfg.kmeans):
      raise FileExistsError(f"{cfg.kmeans} exists; remove it or drop --fit_kmeans to reuse it")
    feats = collect_features(files, encoder, cfg.fit_max_frames, seed=cfg.seed)
    log.info("fitting k-means with %d centroids on %d frames", cfg.fit_kmeans, len(feats))
    kmeans_lib.save_centroids(cfg.kmeans, kmeans_lib.fit(feats, cfg.fit_kmeans, seed=cfg.seed))
  if not cfg.kmeans:
    raise ValueError("--kmeans is required (a .npy of centroids, or --fit_kmeans=K to make one)")
  centroids = kmeans_lib.load_centroids(cfg.kmeans, trust_pickle=cfg.trust_pickled_kmeans)
  dim = getattr(encoder, "dim", None) or encoder.cfg.hidden_size
  if centroids.shape[1] != dim:
    raise ValueError(f"{cfg.kmeans}: centroids have dimension {centroids.shape[1]}, the encoder gives {dim}")
  mine = process_share(files, cfg.process_index, cfg.process_count)
  out = shard_path(cfg.out, cfg.process_index, cfg.process_count)
  log.info("%s: %d of %d files for process %d/%d -> %s", encoder.name, len(mine), len(files), cfg.process_index,
           cfg.process_count, out)
  stats = extract_files(mine, encoder, centroids, out, batch_size=cfg.batch_size,
                        max_batch_seconds=cfg.max_batch_seconds, strict=cfg.strict, progress=cfg.progress)
  log.info("%s", summary(stats, out))
  return stats


def find_audio_or_fail(audio_dir: str, ext: str) -> list[str]:
  files = audio_lib.find_audio(audio_dir, ext)
  if not files:
    raise FileNotFoundError(f"no *.{ext} files under {audio_dir} (set --ext)")
  return files
