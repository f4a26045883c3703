"""What `tools/evaluate.py`, `tools/generate.py` and the Colab notebook call: checkpoint in, results out."""
from __future__ import annotations

import json
import os
import time
from typing import Sequence

import numpy as np

from slm_jax import console, sharding
from slm_jax.eval import benchmarks as bm
from slm_jax.eval import genppl as gp
from slm_jax.eval.generate import Generator, SamplingConfig, cut_units, output_banned, prompt_pieces
from slm_jax.eval.inputs import UnitsFile, make_audio_units
from slm_jax.eval.loading import Loaded, load_checkpoint
from slm_jax.eval.scoring import Scorer

UNITS_NAMES = ("units.jsonl", "features.jsonl")


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1):
  return sharding.make_mesh(data=data, fsdp=fsdp, tensor=tensor)


def find_units(data_dir: str) -> str | None:
  """A units file shipped with a benchmark folder (`units.jsonl` / `features.jsonl`), if any."""
  for name in UNITS_NAMES:
    path = os.path.join(data_dir, name)
    if os.path.isfile(path):
      return path
  return None


def units_source(data_dir: str | None, units: str | None = None, encoder: str | None = None,
                 kmeans: str | None = None, trust_pickle: bool = False, layer: int = 11):
  """AudioUnits when an encoder is given, else a UnitsFile (given, or found in data_dir), else None."""
  if encoder or kmeans:
    if units:
      raise ValueError("give either --units or --encoder/--kmeans, not both")
    return make_audio_units(encoder, kmeans, trust_pickle=trust_pickle, layer=layer)
  path = units or (find_units(data_dir) if data_dir else None)
  return UnitsFile(path) if path else None


def evaluate_loaded(loaded: Loaded, mesh, benchmark: str, data_dir: str, *, split: str = "dev",
                    layout: str = "auto", units=None, reduce: str = "mean", mask_modality: bool = False,
                    cm_modes: Sequence[str] | None = None, cm_text_join: str = " ", scorer: Scorer | None = None,
                    submission_dir: str | None = None, by_pair: bool = False, bench: bm.Benchmark | None = None,
                    **scorer_kw) -> dict:
  bench = bench or bm.load_benchmark(benchmark, data_dir, split=split, layout=layout, cm_modes=cm_modes,
                                     cm_text_join=cm_text_join, units=units)
  scorer = scorer or Scorer(loaded.model, mesh, **scorer_kw)
  results, scores = bm.evaluate(scorer, bench, loaded.encoder(), units, reduce=reduce, mask_modality=mask_modality)
  if not by_pair:
    results.pop("by_pair", None)
  results["checkpoint"] = loaded.info
  results["created"] = timestamp()
  results["settings"]["mesh"] = dict(mesh.shape)
  if submission_dir:
    results["submission"] = bm.write_submission(submission_dir, bench, scores)
  return results


def evaluate_checkpoint(ckpt: str, benchmark: str, data_dir: str, *, step: int | None = None,
                        dtype: str | None = None, mesh=None, units: str | None = None, encoder: str | None = None,
                        kmeans: str | None = None, trust_pickle: bool = False, layer: int = 11,
                        out: str | None = None, **kw) -> dict:
  """Loads `ckpt` and runs one benchmark; writes the results JSON to `out` when given."""
  mesh = mesh or make_mesh()
  source = units_source(data_dir, units, encoder, kmeans, trust_pickle, layer)
  bench = bm.load_benchmark(benchmark, data_dir, units=source,  # bad benchmark input fails before the model loads
                            **{k: kw[k] for k in ("split", "layout", "cm_modes", "cm_text_join") if k in kw})
  loaded = load_checkpoint(ckpt, mesh, step=step, dtype=dtype)
  results = evaluate_loaded(loaded, mesh, benchmark, data_dir, units=source, bench=bench, **kw)
  if out:
    write_json(out, results)
  return results


def genppl_checkpoint(judge: str, transcripts: str, *, mesh=None, dtype: str | None = None, bleu_n: int = 2,
                      out: str | None = None, **scorer_kw) -> dict:
  """GenPPL + auto-BLEU of an ASR transcripts file under a judge LM (Orbax or HF folder, no speech units)."""
  mesh = mesh or make_mesh()
  rows = gp.read_transcripts(transcripts)
  loaded = load_checkpoint(judge, mesh, dtype=dtype, num_units=0)
  res = gp.genppl(Scorer(loaded.model, mesh, **scorer_kw), loaded.tokenizer, [t for _, t in rows], bleu_n)
  res["per_sample_nll"] = dict(zip([n for n, _ in rows], res["per_sample_nll"]))
  results = {"benchmark": "genppl", "metric": "GenPPL", **res, "judge": loaded.info,
             "data": {"transcripts": os.path.abspath(transcripts)}}
  if out:
    write_json(out, results)
  return results


def read_prompts(path: str, modality: str) -> list[dict]:
  """Speech: slamkit features JSONL; text: JSONL with `text` or a plain file, one prompt per line."""
  if modality == "speech":
    recs = []
    with open(path, encoding="utf-8") as f:
      for n, line in enumerate(f, start=1):
        if line.strip():
          rec = json.loads(line)
          if "units" not in rec:
            raise ValueError(f"{path} line {n}: no field 'units' (a slamkit features JSONL is expected)")
          recs.append({"name": os.path.splitext(os.path.basename(rec.get("file_name", str(n))))[0],
                       "units": rec["units"], "duration": rec.get("duration")})
    return recs
  return [{"name": name, "text": text} for name, text in gp.read_transcripts(path)]


def read_audio_prompts(audio_dir: str, source, seconds: float | None, ext: str = "wav,flac") -> list[dict]:
  """Speech prompts from audio files: each cut to its first `seconds` (as slamkit does) before extraction."""
  from slm_jax.units import audio as audio_lib
  paths = audio_lib.find_audio(audio_dir, ext)
  if not paths:
    raise FileNotFoundError(f"no .{ext} files under {audio_dir}")
  wavs = [audio_lib.load_audio(p) for p in paths]
  if seconds:
    wavs = [w[:int(seconds * audio_lib.SAMPLE_RATE)] for w in wavs]
  units = source.units_of_waveforms(wavs)
  return [{"name": os.path.splitext(os.path.basename(p))[0], "units": u.tolist(), "duration": d.tolist()}
          for p, (u, d) in zip(paths, units)]


def generate_loaded(loaded: Loaded, mesh, prompts: list[dict], *, prompt_modality: str = "speech",
                    output_modality: str | None = None, sampling: SamplingConfig = SamplingConfig(),
                    prompt_seconds: float | None = 3.0, allow_eos: bool = False, seed: int = 0,
                    batch_size: int = 32, generator: Generator | None = None) -> tuple[list[dict], dict]:
  """(records, stats): continuations as features records (speech) or text records."""
  output_modality = output_modality or prompt_modality
  enc = loaded.encoder()
  ids = []
  for p in prompts:
    content = (cut_units(p["units"], p.get("duration"), prompt_seconds if p.get("duration") else None)
               if prompt_modality == "speech" else p["text"])
    if prompt_modality == "speech" and len(content) == 0:
      raise ValueError(f"prompt {p['name']}: no units within the first {prompt_seconds} s")
    p["prompt"] = content
    ids.append(enc.encode_pieces(prompt_pieces(prompt_modality, output_modality, content)))
  gen = generator or Generator(loaded.model, mesh)
  banned = output_banned(loaded.layout, loaded.model.cfg.padded_vocab_size, output_modality, allow_eos)
  eos = [loaded.layout.eos_id] if allow_eos and loaded.layout.eos_id is not None else []
  records, seconds, tokens = [], 0.0, 0
  progress = console.bar(total=len(ids), desc="generating", unit="prompt")
  for start in range(0, len(ids), batch_size):
    res = gen.generate(ids[start:start + batch_size], sampling, banned=banned, eos_ids=eos, seed=seed + start)
    seconds, tokens = seconds + res.seconds, tokens + res.new_tokens
    progress.update(len(res.tokens))
    for p, toks in zip(prompts[start:start + batch_size], res.tokens):
      if output_modality == "speech":
        units = (toks - loaded.layout.unit_offset).tolist()
        prompt = np.asarray(p["prompt"]).tolist() if prompt_modality == "speech" else p["prompt"]
        records.append({"file_name": f"{p['name']}_continuation", "units": units, "duration": [1] * len(units),
                        "prompt": prompt})
      else:
        records.append({"file_name": f"{p['name']}_continuation", "text": enc.decode(toks),
                        "prompt": p["prompt"] if prompt_modality == "text" else enc.decode(
                            loaded.layout.unit_ids(p["prompt"]))})
  progress.close()
  return records, {"seconds": seconds, "new_tokens": tokens, "tokens_per_s": tokens / max(seconds, 1e-9)}


def write_json(path: str, obj) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, default=_default)
  os.replace(tmp, path)


def write_jsonl(path: str, records: list[dict]) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    for r in records:
      f.write(json.dumps(r, default=_default) + "\n")


def _default(o):
  if isinstance(o, np.generic):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def timestamp() -> str:
  return time.strftime("%Y-%m-%dT%H:%M:%S")
