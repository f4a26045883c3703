"""The SIMS speech benchmarks (docs/reference.md §6) on their own file layouts: load, turn into token sequences, score, sum up.

A `Benchmark` is a set of items (token sequences to score, keyed by file stem) and pairs (correct, wrong) with
the metadata its official arithmetic needs. Speech parts of items stay as audio paths until `resolve` turns
them into units from a units file or the audio itself.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

import numpy as np

from slm_jax.eval import storycloze as sc
from slm_jax.eval import zerospeech as zs
from slm_jax.eval.inputs import UnitsFile
from slm_jax.eval.scoring import Scorer, modality_banned, pair_outcomes

# name -> (metric, kind, slamkit separator, ZeroSpeech task folder)
BENCHMARKS = {
    "swuggy": ("sWUGGY", "lexical", "_", "lexical"),
    "sblimp": ("sBLIMP", "syntactic", "+", "syntactic"),
    "ssc": ("sSC", "pairs", "_", None),
    "tsc": ("tSC", "pairs", "_", None),
    "cm_ssc": ("cross-modal sSC", "cross_modal", "_", None),
    "cm_tsc": ("cross-modal tSC", "cross_modal", "_", None),
}


class BenchmarkError(ValueError):
  pass


@dataclasses.dataclass
class Item:
  key: str
  pieces: list          # ("text", str) | ("marker", "speech"|"text") | ("speech", [audio paths joined])
  source: str           # file(s) it comes from, for messages


@dataclasses.dataclass
class Pair:
  correct: str
  wrong: str
  meta: dict


@dataclasses.dataclass
class Benchmark:
  name: str
  metric: str
  kind: str             # lexical | syntactic | pairs | cross_modal
  items: dict
  pairs: list
  modality: str | None  # what --mask_modality keeps ('speech' for the speech benchmarks)
  info: dict


def _speech_item(key: str, path: str) -> Item:
  return Item(key, [("speech", [path])], path)


def _zerospeech(name: str, folder: str, split: str) -> Benchmark:
  metric, kind, _, _ = BENCHMARKS[name]
  gold_path = os.path.join(folder, "gold.csv")
  columns = zs.LEXICAL_COLUMNS if kind == "lexical" else zs.SYNTACTIC_COLUMNS
  rows = zs.read_gold(gold_path, columns)
  rows_paired = zs.pair_lexical(rows, gold_path) if kind == "lexical" else zs.pair_syntactic(rows, gold_path)
  items = {r["filename"]: _speech_item(r["filename"], os.path.join(folder, r["filename"] + ".wav")) for r in rows}
  pairs = [Pair(g["filename"], b["filename"], {"gold": (g, b)}) for g, b in rows_paired]
  return Benchmark(name, metric, kind, items, pairs, "speech",
                   {"layout": "zerospeech", "folder": folder, "split": split, "gold": gold_path,
                    "order": [r["filename"] for r in rows]})


def _folder_pairs(name: str, data_dir: str, layout: str, units=None) -> Benchmark:
  metric, kind, sep, _ = BENCHMARKS[name]
  try:
    folders = sc.speaker_folders(data_dir)
  except sc.LayoutError:
    if not isinstance(units, UnitsFile):
      raise
    # no audio at all: the units file lists the folder's files
    folders = [("", data_dir)]
  items, pairs, used = {}, [], set()
  for speaker, folder in folders:
    files = sc.list_audio(folder) or ([os.path.join(folder, s + ".wav") for s in units.stems()]
                                      if isinstance(units, UnitsFile) else [])
    got_layout, stem_pairs = sc.pair_folder(files, layout, sep, folder)
    used.add(got_layout)
    by_stem = {sc.stem(f): f for f in files}
    for good, bad, base in stem_pairs:
      kg, kb = (f"{speaker}/{good}", f"{speaker}/{bad}") if speaker else (good, bad)
      items[kg], items[kb] = _speech_item(kg, by_stem[good]), _speech_item(kb, by_stem[bad])
      pairs.append(Pair(kg, kb, {"speaker": speaker, "base": base}))
  if not pairs:
    raise BenchmarkError(f"{data_dir}: no pairs found")
  return Benchmark(name, metric, "pairs", items, pairs, "speech",
                   {"layout": "+".join(sorted(used)), "folder": data_dir,
                    "speakers": [s for s, _ in folders if s]})


def _cross_modal(name: str, data_dir: str, modes: Sequence[str] | None, text_join: str, units=None) -> Benchmark:
  metric = BENCHMARKS[name][0]
  folders = sc.cm_folders(data_dir)
  bases = [(spk, b) for spk, f in folders for b in sc.cm_bases(f)]

  def has_text(b, part):
    return os.path.isfile(f"{b}_{part}.txt")

  def has_speech(b, part):
    path = sc.audio_path(f"{b}_{part}")
    return path is not None or (isinstance(units, UnitsFile) and f"{os.path.basename(b)}_{part}" in units)

  def speech_path(b, part):
    return sc.audio_path(f"{b}_{part}") or f"{b}_{part}.wav"

  def ready(b, mode):
    p_mod, c_mod = sc.CM_MODES[mode]
    need = [("mutual", p_mod), ("correct", c_mod), ("incorrect", c_mod)]
    return [f"{os.path.basename(b)}_{part}{'.txt' if m == 'text' else ' (audio or units)'}"
            for part, m in need if not (has_text(b, part) if m == "text" else has_speech(b, part))]

  if modes is None:
    modes = [m for m in sc.CM_MODES if all(not ready(b, m) for _, b in bases)]
    if not modes:
      raise BenchmarkError(f"{data_dir}: no cross-modal mode (tt, ts, st, ss) has all its files for every story")
  for m in modes:
    if m not in sc.CM_MODES:
      raise BenchmarkError(f"unknown cross-modal mode {m!r}; known: {', '.join(sc.CM_MODES)}")
    missing = [x for _, b in bases for x in ready(b, m)]
    if missing:
      raise BenchmarkError(f"{data_dir}: mode {m} needs files that are missing: {', '.join(missing[:10])}"
                           + (f" ... ({len(missing)} in all)" if len(missing) > 10 else ""))
  items, pairs = {}, []
  for spk, b in bases:
    base = os.path.basename(b)
    for mode in modes:
      p_mod, c_mod = sc.CM_MODES[mode]
      keys = {}
      for part in ("correct", "incorrect"):
        key = f"{spk + '/' if spk else ''}{base}|{mode}|{part}"
        if p_mod == "speech" and c_mod == "speech":
          paths = [speech_path(b, "mutual"), speech_path(b, part)]
          pieces = [("marker", "speech"), ("speech", paths)]
          src = " + ".join(paths)
        else:
          pieces, srcs = [], []
          for sub, m in (("mutual", p_mod), (part, c_mod)):
            if m == "text":
              path = f"{b}_{sub}.txt"
              text = sc.read_text(path)
              if pieces and pieces[-1][0] == "text":  # T->T: prompt and ending in one text run
                pieces[-1] = ("text", pieces[-1][1] + text_join + text)
              else:
                pieces += [("marker", "text"), ("text", text)]
            else:
              path = speech_path(b, sub)
              pieces += [("marker", "speech"), ("speech", [path])]
            srcs.append(path)
          src = " + ".join(srcs)
        items[key] = Item(key, pieces, src)
        keys[part] = key
      pairs.append(Pair(keys["correct"], keys["incorrect"], {"speaker": spk, "base": base, "mode": mode}))
  return Benchmark(name, metric, "cross_modal", items, pairs, None,
                   {"layout": "cross_modal", "folder": data_dir, "modes": list(modes), "text_join": text_join,
                    "speakers": [s for s, _ in folders if s]})


def load_benchmark(name: str, data_dir: str, split: str = "dev", layout: str = "auto",
                   cm_modes: Sequence[str] | None = None, cm_text_join: str = " ", units=None) -> Benchmark:
  """Reads a benchmark folder. layout: auto | zerospeech | named | slamkit (ignored for cross-modal sets)."""
  if name not in BENCHMARKS:
    raise BenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"data folder {data_dir} does not exist")
  metric, kind, _, task = BENCHMARKS[name]
  if kind == "cross_modal":
    return _cross_modal(name, data_dir, cm_modes, cm_text_join, units)
  if task and layout in ("auto", "zerospeech"):
    folder = zs.find_gold(data_dir, task, split)
    if folder is not None:
      return _zerospeech(name, folder, split)
    if layout == "zerospeech":
      raise BenchmarkError(f"{data_dir}: no gold.csv in it, in {split}/ or in {task}/{split}/")
    try:
      return _folder_pairs(name, data_dir, layout, units)
    except ValueError as e:  # neither layout: the missing gold.csv is the likely cause
      raise BenchmarkError(f"{data_dir}: gold.csv is missing (looked in it, in {split}/ and in {task}/{split}/); "
                           f"nor is it a folder of named / slamkit pairs ({e})") from None
  if layout == "zerospeech":
    raise BenchmarkError(f"{name} has no ZeroSpeech layout (use auto, named or slamkit)")
  return _folder_pairs(name, data_dir, layout, units)


def resolve(bench: Benchmark, encoder, units=None) -> dict[str, np.ndarray]:
  """{item key: token ids} through `encoder` (slm_jax.vocab.Encoder); speech parts take units from `units`."""
  speech = [tuple(v) for it in bench.items.values() for k, v in it.pieces if k == "speech"]
  if speech and units is None:
    raise BenchmarkError(f"{bench.name}: audio input needs --encoder/--kmeans (or precomputed units with --units)")
  if speech and hasattr(units, "prefetch"):
    units.prefetch(speech)
  out = {}
  for key, it in bench.items.items():
    pieces = [("units", units.units(v, needed_by=it.source)) if k == "speech" else (k, v) for k, v in it.pieces]
    for k, v in pieces:
      if k == "units" and len(v) == 0:
        raise BenchmarkError(f"{it.source}: no units")
    out[key] = encoder.encode_pieces(pieces)
  return out


def summarise(bench: Benchmark, outcomes: np.ndarray) -> dict:
  """accuracy and breakdowns with the benchmark's own arithmetic."""
  if bench.kind in ("lexical", "syntactic"):
    gold = [p.meta["gold"] for p in bench.pairs]
    fn = zs.lexical_scores if bench.kind == "lexical" else zs.syntactic_scores
    return fn(gold, outcomes)
  out = {"accuracy": float(np.mean(outcomes)), "breakdowns": {}}
  for field, label in (("speaker", "by_speaker"), ("mode", "by_mode")):
    values = [p.meta.get(field) for p in bench.pairs]
    if any(values):
      groups: dict = {}
      for v, o in zip(values, outcomes):
        groups.setdefault(v, []).append(float(o))
      out["breakdowns"][label] = {k: {"n": len(v), "score": float(np.mean(v))} for k, v in groups.items()}
  return out


def evaluate(scorer: Scorer, bench: Benchmark, encoder, units=None, reduce: str = "mean",
             mask_modality: bool = False) -> tuple[dict, dict[str, float]]:
  """(results dict, {item key: score}). mask_modality bans the other modality (speech benchmarks only)."""
  t0 = time.time()
  seqs = resolve(bench, encoder, units)
  t1 = time.time()
  keys = list(seqs)
  banned = None
  if mask_modality and bench.modality is not None:
    banned = modality_banned(encoder.layout, scorer.cfg.padded_vocab_size, bench.modality)
  res = scorer.score([seqs[k] for k in keys], reduce=reduce, banned=banned, names=[bench.items[k].source for k in keys])
  scores = dict(zip(keys, res.scores.tolist()))
  outcomes = pair_outcomes([scores[p.correct] for p in bench.pairs], [scores[p.wrong] for p in bench.pairs])
  summary = summarise(bench, outcomes)
  t2 = time.time()
  results = {
      "benchmark": bench.name, "metric": bench.metric, "accuracy": summary["accuracy"],
      "num_pairs": len(bench.pairs), "num_items": len(keys),
      **({"num_ids": summary["num_ids"]} if "num_ids" in summary else {}),
      "breakdowns": summary["breakdowns"],
      "data": {k: v for k, v in bench.info.items() if k != "order"},
      "settings": {"reduce": reduce, "mask_modality": bool(mask_modality and bench.modality is not None),
                   "units_source": getattr(units, "kind", None), "units_path": getattr(units, "path", None),
                   "buckets": res.buckets, "padding_fraction": 1 - res.real_tokens / max(res.padded_tokens, 1)},
      "timing": {"prepare_s": round(t1 - t0, 3), "score_s": round(t2 - t1, 3),
                 "pairs_per_s": round(len(bench.pairs) / max(t2 - t1, 1e-9), 2)},
  }
  if "by_pair" in summary:
    results["by_pair"] = summary["by_pair"]
  return results, scores


def write_submission(out_dir: str, bench: Benchmark, scores: dict[str, float]) -> str:
  """ZeroSpeech submission lines `<stem> <score>` (lexical/<split>.txt, syntactic/<split>.txt, else <name>.txt)."""
  if bench.kind in ("lexical", "syntactic"):
    path = os.path.join(out_dir, BENCHMARKS[bench.name][3], f"{bench.info['split']}.txt")
    keys = bench.info["order"]
  else:
    path = os.path.join(out_dir, f"{bench.name}.txt")
    keys = list(bench.items)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    for k in keys:
      f.write(f"{k.replace(' ', '_')} {scores[k]!r}\n")
  return path
