"""slamkit features JSONL -> vocoder input: `units` (deduplicated) with `duration`, or `audio_repr` ("<Un3><Un49>...")."""
from __future__ import annotations

import os

import numpy as np

from slm_jax.jsonl import iter_records
from slm_jax.vocab import parse_units
from slm_jax.vocoder.synth import Vocoder, write_wav


def parse_record(rec: dict, where: str) -> tuple[np.ndarray, np.ndarray | None]:
  """(units, durations or None) of one features record."""
  if "units" in rec:
    units = np.asarray(rec["units"])
    if units.ndim != 1 or (units.size and units.dtype.kind not in "iu"):
      raise ValueError(f"{where}: field 'units' must be a list of integers")
    dur = rec.get("duration")
    if dur is not None:
      dur = np.asarray(dur)
      if dur.shape != units.shape or (dur.size and (dur.dtype.kind not in "iu" or dur.min() < 1)):
        raise ValueError(f"{where}: field 'duration' must be positive integers, one per unit")
    return units.astype(np.int64), dur
  if "audio_repr" in rec:
    if not isinstance(rec["audio_repr"], str):
      raise ValueError(f"{where}: field 'audio_repr' must be a string like '<Un3><Un49>'")
    return parse_units(rec["audio_repr"]), None
  raise ValueError(f"{where}: no field 'units' or 'audio_repr'")


def read_units_jsonl(path: str) -> list[dict]:
  """[{name, units, duration}] from a slamkit features JSONL; `name` is the stem of `file_name`."""
  out = []
  for n, rec in iter_records(path, what="units file"):
    units, dur = parse_record(rec, f"{path} line {n}")
    if units.size == 0:
      raise ValueError(f"{path} line {n}: no units")
    name = os.path.splitext(os.path.basename(str(rec.get("file_name", n))))[0]
    out.append({"name": name, "units": units, "duration": dur})
  return out


def vocode_records(vocoder: Vocoder, recs: list[dict], given_durations: bool = False) -> list[np.ndarray]:
  """Waveforms: durations from the vocoder's predictor when it has one (unless `given_durations`), else the
  records' own `duration`."""
  use_dp = vocoder.cfg.dur_predictor and not given_durations
  if not use_dp:
    missing = [r["name"] for r in recs if r["duration"] is None]
    if missing:
      why = "--given_durations was set" if vocoder.cfg.dur_predictor else "the vocoder has no duration predictor"
      raise ValueError(f"{why}, but records {missing[:5]} have no 'duration'")
  return vocoder([r["units"] for r in recs], None if use_dp else [r["duration"] for r in recs])


def write_wavs(out_dir: str, names: list[str], wavs: list[np.ndarray], sample_rate: int) -> list[str]:
  paths = [os.path.join(out_dir, f"{n}.wav") for n in names]
  for p, w in zip(paths, wavs):
    write_wav(p, w, sample_rate)
  return paths


def vocode_continuations(vocoder: Vocoder, records: list[dict], out_dir: str, with_prompt: bool = False) -> None:
  """Writes OUT_DIR/<file_name>.wav for each speech continuation record (tools/generate.py output) and adds
  its path as `wav`; `with_prompt` vocodes the speech prompt's units first (slamkit's GenPPL does)."""
  recs = []
  for n, r in enumerate(records):
    units = list(r["units"])
    if with_prompt:
      if not isinstance(r.get("prompt"), list):
        raise ValueError(f"record {n} ({r.get('file_name')}): with_prompt needs a speech prompt (list of units)")
      units = list(r["prompt"]) + units
    recs.append({"name": r["file_name"], "units": np.asarray(units, np.int64),
                 "duration": np.ones(len(units), np.int64)})
  wavs = vocode_records(vocoder, recs)
  for r, path in zip(records, write_wavs(out_dir, [x["name"] for x in recs], wavs, vocoder.sample_rate)):
    r["wav"] = path
