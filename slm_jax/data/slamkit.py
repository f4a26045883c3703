"""Readers and validation for slamkit's on-disk formats (docs/reference.md §3) and plain text, one document at a time.

Every parser takes the raw bytes of one input line (or file) and returns a records.Document, or raises
`Rejected(category, reason)`; the caller adds the file and line. Formats (detected per line by their keys):
  features JSONL  {"units": [...], "duration": [...], "file_name": str}   (+ alignment JSON for interleaved)
  tokens JSONL    {"file_name": str, "audio_repr": str}
  text JSONL      {"<text_field>": str, ...};  .txt files are one document each
Alignment JSON: {"aligned_text": [[word, start_s, end_s], ...]} in `<stem>.json`, looked up in `alignment_dir`
or next to the audio (slamkit's rule: `file_name` without its extension, relative to the working directory,
then relative to the features file's folder).
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from slm_jax.data import records
from slm_jax.frames import FRAME_S
from slm_jax.vocab import only_units, parse_units


class Rejected(ValueError):
  """A document that cannot be used: `category` (one of CATEGORIES) and the reason recorded in the manifest."""

  def __init__(self, category: str, reason: str):
    super().__init__(reason)
    self.category = category


CATEGORIES = ("utf8", "json", "malformed", "empty", "unit_range", "durations", "word_times", "missing_alignment")


@dataclasses.dataclass(frozen=True)
class ReadOptions:
  kind: str
  alignment_dir: str | None = None
  text_field: str = "text"
  num_units: int = 500
  time_tolerance: float = FRAME_S  # word end may pass the audio end by this much (seconds)


def _utf8(raw: bytes, what: str) -> str:
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise Rejected("utf8", f"invalid UTF-8 in {what} at byte {e.start}") from None


def _json(raw: bytes, what: str):
  text = _utf8(raw, what)
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise Rejected("json", f"malformed JSON in {what}: {e.msg} at column {e.colno}") from None


def _int_list(obj, key: str) -> np.ndarray:
  value = obj.get(key)
  if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
    raise Rejected("malformed", f"field {key!r} must be a list of integers")
  return np.asarray(value, np.int64)


def _check_units(units: np.ndarray, num_units: int) -> None:
  if units.size == 0:
    raise Rejected("empty", "empty document: no units")
  bad = np.flatnonzero((units < 0) | (units >= num_units))
  if bad.size:
    raise Rejected("unit_range", f"unit id {int(units[bad[0]])} at position {int(bad[0])} outside 0..{num_units - 1}")


def _check_durations(units: np.ndarray, durations: np.ndarray) -> None:
  if len(durations) != len(units):
    raise Rejected("durations", f"durations do not match the units: {len(durations)} durations for {len(units)} units")
  bad = np.flatnonzero(durations <= 0)
  if bad.size:
    raise Rejected("durations", f"duration {int(durations[bad[0]])} at position {int(bad[0])} is not positive")


def find_alignment(file_name: str, opts: ReadOptions, source_path: str | None = None) -> str | None:
  stem = os.path.splitext(file_name)[0]
  if opts.alignment_dir:
    candidates = [os.path.join(opts.alignment_dir, os.path.basename(stem) + ".json")]
  else:
    candidates = [stem + ".json"]
    if source_path and not os.path.isabs(stem):
      candidates.append(os.path.join(os.path.dirname(source_path), stem + ".json"))
  return next((c for c in candidates if os.path.isfile(c)), None)


def parse_alignment(raw: bytes, path: str) -> list:
  obj = _json(raw, f"alignment {path}")
  words = obj.get("aligned_text") if isinstance(obj, dict) else None
  if not isinstance(words, list):
    raise Rejected("malformed", f"alignment {path} has no 'aligned_text' list")
  return words


def aligned_document(doc_id: str, units: np.ndarray, durations: np.ndarray, aligned: list,
                     opts: ReadOptions) -> records.Document:
  """Validates units, durations and word times; builds an interleaved Document."""
  _check_units(units, opts.num_units)
  _check_durations(units, durations)
  if not aligned:
    raise Rejected("empty", "empty document: no aligned words")
  words, starts, ends = [], [], []
  for i, item in enumerate(aligned):
    if isinstance(item, dict):
      item = [item.get("word"), item.get("start"), item.get("end")]
    if (not isinstance(item, (list, tuple)) or len(item) != 3 or not isinstance(item[0], str)
        or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in item[1:])):
      raise Rejected("malformed", f"aligned word {i} is not [word, start_s, end_s]")
    words.append(item[0])
    starts.append(float(item[1]))
    ends.append(float(item[2]))
  starts, ends = np.asarray(starts), np.asarray(ends)
  audio_end = int(durations.sum()) * FRAME_S
  checks = [
      (~np.isfinite(starts) | ~np.isfinite(ends) | (starts < 0), "is not a finite non-negative time"),
      (ends < starts, "ends before it starts (time goes backwards)"),
      (np.concatenate([[False], starts[1:] < starts[:-1]]), "starts before the previous word (time goes backwards)"),
      (np.concatenate([[False], ends[1:] < ends[:-1]]), "ends before the previous word (time goes backwards)"),
      (ends > audio_end + opts.time_tolerance, f"ends past the audio ({audio_end:.2f} s)"),
  ]
  for bad, what in checks:
    idx = np.flatnonzero(bad)
    if idx.size:
      i = int(idx[0])
      raise Rejected("word_times", f"word {i} {words[i]!r} [{starts[i]}, {ends[i]}] {what}")
  return records.Document(
      doc_id=doc_id, text="".join(words), word_offsets=np.cumsum([len(w) for w in words]).astype(np.int32),
      word_starts=starts, word_ends=ends, units=units.astype(np.int16), durations=durations.astype(np.int32))


def _parse_features(obj: dict, opts: ReadOptions, source_path: str | None) -> records.Document:
  file_name = obj.get("file_name")
  if not isinstance(file_name, str):
    raise Rejected("malformed", "field 'file_name' must be a string")
  units, durations = _int_list(obj, "units"), _int_list(obj, "duration")
  if opts.kind == "speech":
    _check_units(units, opts.num_units)
    _check_durations(units, durations)
    return records.Document(doc_id=file_name, units=units.astype(np.int16), durations=durations.astype(np.int32))
  if opts.kind != "interleaved":
    raise Rejected("malformed", f"features lines (units + durations) cannot make {opts.kind} documents")
  aligned = obj.get("aligned_text")
  if aligned is None:
    path = find_alignment(file_name, opts, source_path)
    if path is None:
      stem = os.path.basename(os.path.splitext(file_name)[0])
      where = f"in {opts.alignment_dir}" if opts.alignment_dir else "next to the audio"
      raise Rejected("missing_alignment", f"missing alignment: no {stem}.json {where}")
    with open(path, "rb") as f:
      aligned = parse_alignment(f.read(), path)
  elif not isinstance(aligned, list):
    raise Rejected("malformed", "field 'aligned_text' must be a list")
  return aligned_document(file_name, units, durations, aligned, opts)


def _parse_tokens(obj: dict, opts: ReadOptions) -> records.Document:
  doc_id, s = obj.get("file_name", ""), obj.get("audio_repr")
  if not isinstance(s, str) or not isinstance(doc_id, str):
    raise Rejected("malformed", "fields 'file_name' and 'audio_repr' must be strings")
  if not s:
    raise Rejected("empty", "empty document: empty audio_repr")
  if opts.kind == "text":
    return records.Document(doc_id=doc_id, text=s)
  ids = parse_units(s)
  if opts.kind == "speech":
    if not only_units(s):
      raise Rejected("malformed", "audio_repr of a speech document holds more than <UnN> tokens")
    _check_units(ids, opts.num_units)
    return records.Document(doc_id=doc_id, units=ids.astype(np.int16))
  if ids.size:
    _check_units(ids, opts.num_units)
  return records.Document(doc_id=doc_id, text=s)


def parse_line(raw: bytes, opts: ReadOptions, source_path: str | None = None,
               line_no: int | None = None) -> records.Document:
  """One JSONL line -> Document, or Rejected."""
  obj = _json(raw, "line")
  if not isinstance(obj, dict):
    raise Rejected("malformed", "malformed JSON record: not an object")
  if "units" in obj:
    return _parse_features(obj, opts, source_path)
  if "audio_repr" in obj:
    return _parse_tokens(obj, opts)
  if opts.kind != "text":
    raise Rejected("malformed", f"record has neither 'units' nor 'audio_repr' (needed for {opts.kind} documents)")
  text = obj.get(opts.text_field)
  if not isinstance(text, str):
    raise Rejected("malformed", f"record has no string field {opts.text_field!r}")
  if not text.strip():
    raise Rejected("empty", "empty document: empty text")
  doc_id = obj.get("id", obj.get("file_name"))
  doc_id = doc_id if isinstance(doc_id, str) else f"{source_path}:{line_no}"
  return records.Document(doc_id=doc_id, text=text)


def parse_text_file(raw: bytes, path: str) -> records.Document:
  text = _utf8(raw, "file")
  if not text.strip():
    raise Rejected("empty", "empty document: empty text")
  return records.Document(doc_id=path, text=text)


def iter_inputs(paths: list[str]):
  """Yields (path, line_no (1-based; 0 for a whole .txt file), raw bytes), streaming."""
  for path in paths:
    if path.endswith(".txt"):
      with open(path, "rb") as f:
        yield path, 0, f.read()
      continue
    with open(path, "rb") as f:
      for i, line in enumerate(f, 1):
        line = line.rstrip(b"\r\n")
        if line.strip():
          yield path, i, line


def read_one(path: str, line_no: int, raw: bytes, opts: ReadOptions) -> records.Document:
  if line_no == 0:
    if opts.kind != "text":
      raise Rejected("malformed", ".txt files hold text-only documents")
    return parse_text_file(raw, path)
  return parse_line(raw, opts, path, line_no)


def word_count(doc: records.Document) -> int:
  return doc.num_words if doc.num_words else len(doc.text.split())
