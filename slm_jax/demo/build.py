"""Builds data/demo/: TTS speech with exact word times, stand-in (mfcc) units, slamkit-format files, look-alike
evaluation sets (docs/reference.md §3, §6). Deterministic for a given seed (flite and the k-means fit are deterministic)."""
from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time

import numpy as np

from slm_jax.demo import text as demo_text
from slm_jax.demo import tts as tts_lib
from slm_jax.units import audio as audio_lib
from slm_jax.units import dedup as dedup_lib
from slm_jax.units import extract as extract_lib
from slm_jax.units import kmeans as kmeans_lib
from slm_jax.units.mfcc import MfccEncoder

log = logging.getLogger(__name__)
VOICES = tts_lib.FLITE_VOICES
TSC_VOICE = "kal16"  # one voice for the stories, as the real tSC (and the fastest flite voice)
SPOKEN_BOTCHAN = range(0, 4)  # chapters I-IV spoken (with Alice ch. I-II)
TEXT_BOTCHAN = range(4, 8)  # chapters V-VIII as text-only documents
EVAL_BOTCHAN = range(8, 11)  # chapters IX-XI held out for the tSC / sBLIMP look-alikes


@dataclasses.dataclass
class Config:
  out_dir: str = "data/demo"
  audio_dir: str = "data/demo/audio"  # synthesised wavs (regenerable; not committed)
  seed: int = 0
  num_units: int = 500
  jobs: int = 2
  swuggy_per_band: int = 100  # words per frequency band (5 bands), each in 2 voices
  sblimp_per_paradigm: int = 40  # pairs per paradigm (5 paradigms), each in 2 voices
  tsc_stories: int = 100
  max_utterances: int | None = None  # cap on spoken training utterances (tests / quick runs)
  prepare: bool = True  # also write prepared/ (the datasets the demo config trains on)


# ---------------------------------------------------------------------------------------------------------------
# synthesis (process pool; each worker owns one in-process flite)
# ---------------------------------------------------------------------------------------------------------------
_FLITE = None
_TTS_VERSION = "flite-srand1"  # bump when synthesis changes, to invalidate cached wavs


def _synth(job):
  """job = (wav_path, text, voice) -> (wav_path, words, phones, num_samples); cached next to the wav."""
  global _FLITE
  wav_path, text, voice = job
  meta_path = wav_path + ".json"
  if os.path.exists(wav_path) and os.path.exists(meta_path):
    with open(meta_path) as f:
      meta = json.load(f)
    if meta["text"] == text and meta["voice"] == voice and meta.get("tts") == _TTS_VERSION:
      return wav_path, meta["words"], meta["phones"], meta["num_samples"]
  import soundfile as sf
  if _FLITE is None:
    _FLITE = tts_lib.Flite()
  s = _FLITE.synthesize(text, voice)
  if s.sample_rate != audio_lib.SAMPLE_RATE:
    raise RuntimeError(f"flite voice {voice} gives {s.sample_rate} Hz, expected {audio_lib.SAMPLE_RATE}")
  os.makedirs(os.path.dirname(wav_path), exist_ok=True)
  sf.write(wav_path, s.audio, s.sample_rate, subtype="PCM_16")
  words = [[w, round(a, 4), round(b, 4)] for w, a, b in s.words]
  with open(meta_path, "w") as f:
    json.dump({"tts": _TTS_VERSION, "text": text, "voice": voice, "words": words, "phones": s.phones, "num_samples": len(s.audio)}, f)
  return wav_path, words, s.phones, len(s.audio)


def synthesize_all(jobs: list, workers: int) -> dict:
  """{wav_path: (words, phones, num_samples)} for every (wav_path, text, voice) job."""
  out = {}
  t0 = time.perf_counter()
  ctx = multiprocessing.get_context("spawn")  # no fork after JAX has started
  with concurrent.futures.ProcessPoolExecutor(max(1, workers), mp_context=ctx) as pool:
    for i, (path, words, phones, n) in enumerate(pool.map(_synth, jobs, chunksize=16)):
      out[path] = (words, phones, n)
      if (i + 1) % 500 == 0:
        log.info("synthesised %d / %d files (%.0f s)", i + 1, len(jobs), time.perf_counter() - t0)
  return out


# ---------------------------------------------------------------------------------------------------------------
# the build
# ---------------------------------------------------------------------------------------------------------------
def _hash_name(*parts) -> str:
  return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:10]


def _write_jsonl(path: str, rows) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
  os.replace(path + ".tmp", path)


def _write_csv(path: str, header: list, rows: list) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)


def _units_jsonl(paths, encoder, centroids, out_path, name_fn) -> None:
  """Extracts units for `paths` and writes them sorted by file_name (a fresh file each build)."""
  tmp = out_path + ".partial"
  if os.path.exists(tmp):
    os.remove(tmp)
  stats = extract_lib.extract_files(paths, encoder, centroids, tmp, batch_size=16, file_name=name_fn,
                                    progress=False, strict=True)
  rows = sorted(extract_lib.iter_features(tmp), key=lambda r: r["file_name"])
  _write_jsonl(out_path, rows)
  os.remove(tmp)
  log.info("%s", extract_lib.summary(stats, out_path))


def build(cfg: Config) -> dict:
  """Writes the demo dataset; returns the manifest (also written to out_dir/manifest.json)."""
  t_start = time.perf_counter()
  tts_lib.ensure_flite()
  rng = np.random.default_rng(cfg.seed)
  out, adir = cfg.out_dir, cfg.audio_dir

  # --- text: spoken utterances, text-only documents, held-out evaluation material
  utts = []
  for p in demo_text.alice_paragraphs():
    utts += [("alice", u) for u in demo_text.group_utterances(p)]
  chapters = demo_text.botchan_chapters()
  for c in SPOKEN_BOTCHAN:
    utts += [(f"botchan{c + 1:02d}", u) for u in demo_text.group_utterances(chapters[c])]
  if cfg.max_utterances:
    utts = utts[:cfg.max_utterances]
  train = []
  counters = {}
  for src, text in utts:
    counters[src] = counters.get(src, 0) + 1
    train.append({"id": f"{src}_{counters[src]:04d}", "text": text, "voice": VOICES[int(rng.integers(len(VOICES)))]})
  text_docs = []
  for c in TEXT_BOTCHAN:
    sents = chapters[c]
    docs = [sents[i:i + 25] for i in range(0, len(sents), 25)]
    if len(docs) > 1 and sum(len(s.split()) for s in docs[-1]) < 100:
      docs[-2:] = [docs[-2] + docs[-1]]  # no short tail document
    text_docs += [{"text": " ".join(d)} for d in docs]
  held_out = [s for c in EVAL_BOTCHAN for s in chapters[c]]
  counts = demo_text.word_counts([u["text"] for u in train] + [d["text"] for d in text_docs])

  sw_items = demo_text.swuggy_items(counts, demo_text.cmudict_words(), cfg.swuggy_per_band, rng, _pronouncer())
  sb_items = demo_text.sblimp_items(cfg.sblimp_per_paradigm, held_out, rng)
  stories = demo_text.tsc_stories(held_out, cfg.tsc_stories, rng)

  # --- synthesis jobs
  jobs = [(os.path.join(adir, "train", u["id"] + ".wav"), u["text"], u["voice"]) for u in train]
  sw_rows, sb_rows, tsc_files = [], [], []
  for i, it in enumerate(sw_items):
    for voice in sorted(rng.choice(VOICES, 2, replace=False)):
      for correct, form in ((1, it["word"]), (0, it["nonword"])):
        name = _hash_name("swuggy", cfg.seed, i, voice, correct)
        sw_rows.append([name, i, voice, it["frequency"], form, None, None, correct])
        jobs.append((os.path.join(adir, "swuggy", name + ".wav"), form, voice))
  for i, it in enumerate(sb_items):
    for voice in sorted(rng.choice(VOICES, 2, replace=False)):
      for correct, sent in ((1, it["good"]), (0, it["bad"])):
        name = _hash_name("sblimp", cfg.seed, i, voice, correct)
        sb_rows.append([name, i, voice, it["type"], it["subtype"], sent, correct])
        jobs.append((os.path.join(adir, "sblimp", name + ".wav"), sent, voice))
  for i, st in enumerate(stories):
    sid = _hash_name("tsc", cfg.seed, i)
    for kind, ending in (("correct", st["ending"]), ("incorrect", st["wrong_ending"])):
      name = f"{i}_{sid}_{kind}"
      tsc_files.append((name, st, kind))
      jobs.append((os.path.join(adir, "tsc", name + ".wav"), " ".join(st["context"] + [ending]), TSC_VOICE))
  log.info("synthesising %d files with flite (%d workers)", len(jobs), cfg.jobs)
  synth = synthesize_all(jobs, cfg.jobs)
  t_tts = time.perf_counter() - t_start

  # --- raw slamkit formats
  raw = os.path.join(out, "raw")
  if os.path.isdir(os.path.join(raw, "alignments")):
    shutil.rmtree(os.path.join(raw, "alignments"))
  os.makedirs(os.path.join(raw, "alignments"))
  for u in train:
    words, _, _ = synth[os.path.join(adir, "train", u["id"] + ".wav")]
    with open(os.path.join(raw, "alignments", u["id"] + ".json"), "w", encoding="utf-8") as f:
      json.dump({"aligned_text": [[" " + w, a, b] for w, a, b in words]}, f, ensure_ascii=False)
  _write_jsonl(os.path.join(raw, "text.jsonl"), text_docs)

  # --- stand-in encoder: fit k-means on the training speech, then units for everything
  log.info("fitting k-means (%d units) on the stand-in features", cfg.num_units)
  encoder = MfccEncoder()
  train_wavs = [j[0] for j in jobs[:len(train)]]
  feats = [encoder.features(audio_lib.load_audio(p)) for p in train_wavs]  # one MFCC pass, kept in memory
  centroids = kmeans_lib.fit(np.concatenate(feats), cfg.num_units, seed=cfg.seed, iters=20, max_points=100_000)
  kmeans_lib.save_centroids(os.path.join(out, "kmeans_mfcc.npy"), centroids)
  frame_units = _assign_all(feats, centroids)
  _write_jsonl(os.path.join(raw, "features.jsonl"),
               [dedup_lib.features_record(u, os.path.relpath(p, out)) for p, u in zip(train_wavs, frame_units)])

  ev = os.path.join(out, "eval")
  stem = lambda p: os.path.basename(p)  # noqa: E731
  for rows, set_name in ((sw_rows, "swuggy"), (sb_rows, "sblimp")):
    paths = [os.path.join(adir, set_name, r[0] + ".wav") for r in rows]
    _units_jsonl(paths, encoder, centroids, os.path.join(ev, set_name, "units.jsonl"), stem)
  for r in sw_rows:
    phones = synth[os.path.join(adir, "swuggy", r[0] + ".wav")][1]
    r[5], r[6] = " ".join(phones), len(phones)
  _write_csv(os.path.join(ev, "swuggy", "gold.csv"),
             ["filename", "id", "voice", "frequency", "word", "phones", "length", "correct"], sw_rows)
  _write_csv(os.path.join(ev, "sblimp", "gold.csv"),
             ["filename", "id", "voice", "type", "subtype", "transcription", "correct"], sb_rows)
  tsc_paths = [os.path.join(adir, "tsc", n + ".wav") for n, _, _ in tsc_files]
  _units_jsonl(tsc_paths, encoder, centroids, os.path.join(ev, "tsc", "units.jsonl"), stem)
  _cross_modal_tsc(tsc_files, synth, adir, encoder, centroids, os.path.join(ev, "cm_tsc"))

  manifest = {
      "what": "stand-in demo data: flite TTS speech, MFCC k-means units (NOT mHuBERT units)",
      "seed": cfg.seed, "voices": list(VOICES), "num_units": cfg.num_units, "frame_seconds": encoder.frame_seconds,
      "train_utterances": len(train),
      "train_hours": sum(synth[p][2] for p in train_wavs) / audio_lib.SAMPLE_RATE / 3600,
      "text_documents": len(text_docs), "text_words": sum(len(d["text"].split()) for d in text_docs),
      "swuggy_pairs": len(sw_rows) // 2, "sblimp_pairs": len(sb_rows) // 2, "tsc_stories": len(stories),
      "tts_seconds": round(t_tts, 1),
  }
  if cfg.prepare:
    manifest["prepared"] = prepare(out)
  manifest["build_seconds"] = round(time.perf_counter() - t_start, 1)
  with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
  return manifest


def _pronouncer():
  """text -> (flite's phones, seconds of speech between the first and last word) in one voice; used to match
  sWUGGY pairs (the phones do not depend on the voice)."""
  flite = tts_lib.Flite()

  def pronounce(text: str):
    s = flite.synthesize(text, TSC_VOICE)
    return s.phones, s.words[-1][2] - s.words[0][1]
  return pronounce


def _assign_all(feats: list, centroids: np.ndarray, chunk: int = 1 << 16) -> list:
  """Nearest-centroid units of many [T_i, D] arrays, in fixed-size chunks (one compiled shape)."""
  flat = np.concatenate(feats)
  n = len(flat)
  flat = np.concatenate([flat, np.zeros((-n % chunk, flat.shape[1]), flat.dtype)])
  units = np.concatenate([np.asarray(kmeans_lib.assign(flat[i:i + chunk], centroids))
                          for i in range(0, len(flat), chunk)])[:n]
  return np.split(units, np.cumsum([len(f) for f in feats])[:-1])


def _cross_modal_tsc(tsc_files, synth, adir, encoder, centroids, out_dir) -> None:
  """Cross-modal StoryCloze look-alike: `<base>_mutual|correct|incorrect` as .txt and as units (the prompt and
  the endings cut out of the whole-story audio at the ending's first word)."""
  if os.path.isdir(out_dir):
    shutil.rmtree(out_dir)
  os.makedirs(os.path.join(out_dir, "text"))
  rows = []
  fs = encoder.frame_seconds
  for name, st, kind in tsc_files:
    base = name.rsplit("_", 1)[0]
    path = os.path.join(adir, "tsc", name + ".wav")
    words = synth[path][0]
    n_ctx = sum(len(s.split()) for s in st["context"])
    spoken_ctx = _spoken_index(words, n_ctx)
    cut = int(round(words[spoken_ctx][1] / fs))
    wav = audio_lib.load_audio(path)
    frames = extract_lib.units_for_batch(encoder, centroids, [wav])[0]
    ending = st["ending"] if kind == "correct" else st["wrong_ending"]
    rows.append(dedup_lib.features_record(frames[cut:], f"{base}_{kind}.wav"))
    _write_text(os.path.join(out_dir, "text", f"{base}_{kind}.txt"), " " + ending)
    if kind == "correct":
      rows.append(dedup_lib.features_record(frames[:cut], f"{base}_mutual.wav"))
      _write_text(os.path.join(out_dir, "text", f"{base}_mutual.txt"), " ".join(st["context"]))
  _write_jsonl(os.path.join(out_dir, "units.jsonl"), sorted(rows, key=lambda r: r["file_name"]))


def _spoken_index(words, n_input_words: int) -> int:
  """Index into flite's word list of the first word after `n_input_words` input pieces (merged pieces count)."""
  seen = 0
  for i, (w, _, _) in enumerate(words):
    if seen >= n_input_words:
      return i
    seen += len(w.split())
  raise ValueError("story ending has no spoken word")


def _write_text(path: str, text: str) -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.write(text.strip() + "\n")


def prepare(out_dir: str) -> str:
  """Writes out_dir/prepared/{interleaved,speech,text} (slm_jax.data.prepare, as tools/prepare_data.py does)."""
  from slm_jax.data import prepare as prepare_lib
  raw = os.path.join(out_dir, "raw")
  runs = [("interleaved", os.path.join(raw, "features.jsonl"), os.path.join(raw, "alignments")),
          ("speech", os.path.join(raw, "features.jsonl"), None),
          ("text", os.path.join(raw, "text.jsonl"), None)]
  for kind, inp, align in runs:
    dst = os.path.join(out_dir, "prepared", kind)
    prepare_lib.prepare(prepare_lib.PrepareConfig(kind=kind, inputs=[inp], out_dir=dst, alignment_dir=align,
                                                  overwrite=True))
  return "written with slm_jax.data.prepare"
