"""ZeroSpeech 2021 sWUGGY (lexical) and sBLIMP (syntactic): gold.csv, pairing, and the official arithmetic.

Follows zerospeech2021's `lexical.py` / `syntactic.py` / `leaderboard.py` (docs/reference.md §6): a pair scores 1 when the
correct item scores higher, 0.5 on a tie, 0 otherwise; sWUGGY averages a word's pairs over voices (per id),
then over ids, and reports frequency bands; sBLIMP pairs the i-th correct row with the i-th incorrect row,
averages over voices per (type, subtype, id), then over those groups, and reports by type.
"""
from __future__ import annotations

import csv
import math
import os
from collections import OrderedDict

import numpy as np

LEXICAL_COLUMNS = ("filename", "id", "voice", "frequency", "word", "phones", "length", "correct")
SYNTACTIC_COLUMNS = ("filename", "id", "voice", "type", "subtype", "transcription", "correct")
# pandas.cut(frequency, [0, 1, 5, 20, 100, inf], right=False, labels=...) in the official evaluator: intervals
# are [0,1) [1,5) [5,20) [20,100) [100,inf), so e.g. a frequency of 5 lands in the band labelled '6-20'.
BAND_EDGES = (0, 1, 5, 20, 100, math.inf)
BAND_LABELS = ("oov", "1-5", "6-20", "21-100", ">100")


class GoldError(ValueError):
  pass


def read_gold(path: str, columns: tuple[str, ...]) -> list[dict]:
  """Rows of a gold.csv as dicts (plus `line`), checked for columns, 0/1 `correct` and unique filenames."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"gold file {path} does not exist")
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
      raise GoldError(f"{path}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
    rows, seen = [], {}
    for line, row in enumerate(reader, start=2):
      if row["correct"] not in ("0", "1"):
        raise GoldError(f"{path} line {line}: field 'correct' must be 0 or 1, got {row['correct']!r}")
      name = row["filename"]
      if name in seen:
        raise GoldError(f"{path} line {line}: filename {name!r} already on line {seen[name]}")
      seen[name] = line
      rows.append({**row, "correct": int(row["correct"]), "line": line})
  if not rows:
    raise GoldError(f"{path}: no rows")
  return rows


def _frequency(value: str | None) -> int | None:
  if value is None or value.strip() in ("", "nan", "NaN", "<NA>"):
    return None
  return int(float(value))


def pair_lexical(rows: list[dict], where: str = "gold.csv") -> list[tuple[dict, dict]]:
  """(word row, non-word row) for every (id, voice), in gold order; each must have exactly one of each."""
  groups: "OrderedDict[tuple, dict]" = OrderedDict()
  for r in rows:
    g = groups.setdefault((r["id"], r["voice"]), {1: [], 0: []})
    g[r["correct"]].append(r)
  pairs, problems = [], []
  for (id_, voice), g in groups.items():
    if len(g[1]) != 1 or len(g[0]) != 1:
      lines = ", ".join(str(r["line"]) for r in g[1] + g[0])
      problems.append(f"  id {id_!r} voice {voice!r}: {len(g[1])} word(s) and {len(g[0])} non-word(s) "
                      f"(lines {lines})")
      continue
    pairs.append((g[1][0], g[0][0]))
  if problems:
    raise GoldError(f"{where}: unpaired items (each (id, voice) needs one word and one non-word):\n"
                    + "\n".join(problems[:20]) + (f"\n  ... {len(problems) - 20} more" if len(problems) > 20 else ""))
  return pairs


def pair_syntactic(rows: list[dict], where: str = "gold.csv") -> list[tuple[dict, dict]]:
  """The i-th correct row with the i-th incorrect row (positional, as the official evaluator)."""
  good = [r for r in rows if r["correct"] == 1]
  bad = [r for r in rows if r["correct"] == 0]
  if len(good) != len(bad):
    raise GoldError(f"{where}: {len(good)} correct and {len(bad)} incorrect rows; sBLIMP pairs them by position")
  for g, b in zip(good, bad):
    if (g["type"], g["subtype"], g["id"]) != (b["type"], b["subtype"], b["id"]):
      raise GoldError(f"{where}: line {g['line']} (correct) and line {b['line']} (incorrect) are paired by position "
                      f"but differ in (type, subtype, id): {(g['type'], g['subtype'], g['id'])} vs "
                      f"{(b['type'], b['subtype'], b['id'])}")
  return list(zip(good, bad))


def _stats(values: list[float]) -> dict:
  v = np.asarray(values, np.float64)
  std = float(v.std(ddof=1)) if len(v) > 1 else None  # pandas' std is NaN for one value
  return {"n": int(len(v)), "score": float(v.mean()) if len(v) else None, "std": std}


def band(frequency: int | None) -> str | None:
  if frequency is None:
    return None
  for lo, hi, label in zip(BAND_EDGES[:-1], BAND_EDGES[1:], BAND_LABELS):
    if lo <= frequency < hi:
      return label
  return None  # negative frequencies fall outside every band, as with pandas.cut


def lexical_scores(pairs: list[tuple[dict, dict]], outcomes: np.ndarray) -> dict:
  """sWUGGY: per-id mean over voices, overall mean over ids, by frequency band, in-vocabulary, by length."""
  by_id: "OrderedDict[str, dict]" = OrderedDict()
  for (word, nonword), o in zip(pairs, outcomes):
    g = by_id.setdefault(word["id"], {"word": word["word"], "non_word": nonword["word"],
                                       "frequency": _frequency(word["frequency"]), "length": word["length"],
                                       "scores": []})
    g["scores"].append(float(o))
  per_id = [{"id": k, **{f: v for f, v in g.items() if f != "scores"}, "score": float(np.mean(g["scores"]))}
            for k, g in by_id.items()]
  bands = {label: [] for label in BAND_LABELS}
  lengths: dict = {}
  for r in per_id:
    b = band(r["frequency"])
    if b is not None:
      bands[b].append(r["score"])
    lengths.setdefault(r["length"], []).append(r["score"])
  by_band = {label: _stats(v) for label, v in bands.items() if v}
  in_vocab = [s for label in BAND_LABELS[1:] for s in bands[label]]
  return {
      "accuracy": float(np.mean([r["score"] for r in per_id])),
      "num_ids": len(per_id),
      "breakdowns": {
          "by_frequency": by_band,
          "in_vocab": float(np.mean(in_vocab)) if in_vocab else None,
          "by_length": {str(k): _stats(v) for k, v in sorted(lengths.items(), key=lambda kv: _sort_key(kv[0]))},
      },
      "by_pair": per_id,
  }


def syntactic_scores(pairs: list[tuple[dict, dict]], outcomes: np.ndarray) -> dict:
  """sBLIMP: mean over voices per (type, subtype, id), overall mean over those groups, and by type."""
  groups: "OrderedDict[tuple, dict]" = OrderedDict()
  for (good, bad), o in zip(pairs, outcomes):
    g = groups.setdefault((good["type"], good["subtype"], good["id"]),
                          {"sentence": good["transcription"], "non_sentence": bad["transcription"], "scores": []})
    g["scores"].append(float(o))
  per_group = [{"type": t, "subtype": s, "id": i, "sentence": g["sentence"], "non_sentence": g["non_sentence"],
                "score": float(np.mean(g["scores"]))} for (t, s, i), g in groups.items()]
  types: dict = {}
  for r in per_group:
    types.setdefault(r["type"], []).append(r["score"])
  return {
      "accuracy": float(np.mean([r["score"] for r in per_group])),
      "num_ids": len(per_group),
      "breakdowns": {"by_type": {t: _stats(v) for t, v in sorted(types.items())}},
      "by_pair": per_group,
  }


def _sort_key(v):
  try:
    return (0, float(v), "")
  except (TypeError, ValueError):
    return (1, 0.0, str(v))


def find_gold(data_dir: str, task: str, split: str) -> str | None:
  """The folder holding gold.csv: data_dir itself, data_dir/<split>, or data_dir/<task>/<split>."""
  for d in (data_dir, os.path.join(data_dir, split), os.path.join(data_dir, task, split)):
    if os.path.isfile(os.path.join(d, "gold.csv")):
      return d
  return None
