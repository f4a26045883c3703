"""File layouts of the pair benchmarks (docs/reference.md §6): StoryCloze naming, slamkit pre-paired folders, cross-modal sets.

- named: `<n>_<storyid>_correct` / `<n>_<storyid>_incorrect` (any stem ending in `_correct` / `_incorrect`),
  paired by the stem without its label.
- slamkit: files sorted by the integer before the first separator (`_`, or `+` for sBLIMP); files 2i and
  2i+1 are (correct, wrong), as slamkit's `ModellingMetricDataset`.
- multi-speaker: one such folder per speaker; pairs never cross folders.
- cross-modal: `<base>_correct`, `<base>_incorrect`, `<base>_mutual` (the prompt) as `.txt` and/or audio.
"""
from __future__ import annotations

import os
import re

AUDIO_EXTS = (".wav", ".flac")
LABELS = ("correct", "incorrect")
_NAMED = re.compile(r"^(?P<base>.+)_(?P<label>correct|incorrect)$")


class LayoutError(ValueError):
  pass


def stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def list_audio(folder: str) -> list[str]:
  """Audio files directly in `folder`, sorted by name."""
  return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                if f.lower().endswith(AUDIO_EXTS) and os.path.isfile(os.path.join(folder, f)))


def speaker_folders(data_dir: str) -> list[tuple[str, str]]:
  """[(speaker, folder)]: data_dir itself when it holds audio (speaker ''), else its subfolders that do."""
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"data folder {data_dir} does not exist")
  if list_audio(data_dir):
    return [("", data_dir)]
  subs = [(d, os.path.join(data_dir, d)) for d in sorted(os.listdir(data_dir))
          if os.path.isdir(os.path.join(data_dir, d))]
  subs = [(d, p) for d, p in subs if list_audio(p)]
  if not subs:
    raise LayoutError(f"{data_dir}: no .wav/.flac files in it or in any subfolder")
  return subs


def detect_layout(stems: list[str]) -> str:
  return "named" if stems and all(_NAMED.match(s) for s in stems) else "slamkit"


def _leading_int(s: str, sep: str, where: str) -> int:
  head = s.split(sep)[0]
  try:
    return int(head)
  except ValueError:
    raise LayoutError(f"{where}: file {s!r} does not start with an integer followed by {sep!r} (slamkit layout "
                      "sorts by it); use --layout=named for <base>_correct/<base>_incorrect names") from None


def pair_named(stems: list[str], where: str) -> list[tuple[str, str, str]]:
  """[(correct stem, wrong stem, base)] for `<base>_correct` / `<base>_incorrect`, ordered by base."""
  groups: dict[str, dict[str, str]] = {}
  for s in stems:
    m = _NAMED.match(s)
    if not m:
      raise LayoutError(f"{where}: file {s!r} does not end in _correct or _incorrect")
    groups.setdefault(m["base"], {})[m["label"]] = s
  missing = [f"  {b}: no {b}_{lab}" for b, g in groups.items() for lab in LABELS if lab not in g]
  if missing:
    raise LayoutError(f"{where}: unpaired files:\n" + "\n".join(missing[:20]))

  def key(b):
    head = b.split("_")[0]
    return (0, int(head), b) if head.isdigit() else (1, 0, b)
  return [(groups[b]["correct"], groups[b]["incorrect"], b) for b in sorted(groups, key=key)]


def pair_slamkit(stems: list[str], sep: str, where: str) -> list[tuple[str, str, str]]:
  """[(stem 2i, stem 2i+1, '<i>')] after sorting by the leading integer."""
  keyed = sorted(((_leading_int(s, sep, where), s) for s in stems))
  ints = [k for k, _ in keyed]
  dup = sorted({k for k in ints if ints.count(k) > 1})
  if dup:
    names = [s for k, s in keyed if k == dup[0]]
    raise LayoutError(f"{where}: files {names} share the leading integer {dup[0]}; the slamkit layout needs a "
                      "unique order")
  if len(keyed) % 2:
    raise LayoutError(f"{where}: {len(keyed)} files, an odd number: {keyed[-1][1]!r} has no partner "
                      "(slamkit layout pairs files 2i and 2i+1)")
  return [(keyed[2 * i][1], keyed[2 * i + 1][1], str(i)) for i in range(len(keyed) // 2)]


def pair_folder(files: list[str], layout: str, sep: str, where: str) -> tuple[str, list[tuple[str, str, str]]]:
  """(layout used, pairs of stems) for one folder's file paths; layout is 'auto', 'named' or 'slamkit'."""
  stems = [stem(f) for f in files]
  if layout == "auto":
    layout = detect_layout(stems)
  if layout == "named":
    return layout, pair_named(stems, where)
  if layout == "slamkit":
    return layout, pair_slamkit(stems, sep, where)
  raise ValueError(f"layout must be auto, named or slamkit, got {layout!r}")


# ---- cross-modal StoryCloze ---------------------------------------------------------------------------------
CM_MODES = {"tt": ("text", "text"), "ts": ("text", "speech"), "st": ("speech", "text"), "ss": ("speech", "speech")}
CM_PARTS = ("mutual", "correct", "incorrect")


def cm_bases(folder: str) -> list[str]:
  """Sorted `<base>` of every `<base>_correct.{txt,wav,flac}` in `folder` (full paths without suffix)."""
  out = set()
  for f in os.listdir(folder):
    s, ext = os.path.splitext(f)
    if s.endswith("_correct") and ext.lower() in (".txt",) + AUDIO_EXTS:
      out.add(os.path.join(folder, s[: -len("_correct")]))
  return sorted(out)


def cm_folders(data_dir: str) -> list[tuple[str, str]]:
  """[(speaker, folder)] holding cross-modal files: data_dir itself, else its subfolders."""
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"data folder {data_dir} does not exist")
  if cm_bases(data_dir):
    return [("", data_dir)]
  subs = [(d, os.path.join(data_dir, d)) for d in sorted(os.listdir(data_dir))
          if os.path.isdir(os.path.join(data_dir, d))]
  subs = [(d, p) for d, p in subs if cm_bases(p)]
  if not subs:
    raise LayoutError(f"{data_dir}: no <base>_correct.txt/.wav files in it or in any subfolder")
  if len(subs) == 1:  # one subfolder (e.g. text/ beside a units file) is not a speaker split
    return [("", subs[0][1])]
  return subs


def audio_path(base_part: str) -> str | None:
  for ext in AUDIO_EXTS:
    if os.path.isfile(base_part + ext):
      return base_part + ext
  return None


def read_text(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read().strip()
