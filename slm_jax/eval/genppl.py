"""GenPPL and auto-BLEU of generated continuations, from transcripts made by any ASR (docs/reference.md §6).

GenPPL = exp(mean over samples of each sample's mean token NLL) under a judge text LM run by our own model
code (the paper: Llama-3.2-1B); the judge's tokenizer adds its BOS, whose first token is context only.
auto-BLEU-n is slamkit's `calc_auto_bleu` (`slm_jax.textmetrics.auto_bleu`).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Sequence

import numpy as np

from slm_jax.jsonl import iter_records
from slm_jax.textmetrics import auto_bleu


def read_transcripts(path: str) -> list[tuple[str, str]]:
  """[(name, text)] from JSONL (`text` or `transcript`, with `file_name`) or plain text (one per line)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"transcripts file {path} does not exist")
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  if not (path.endswith(".jsonl") or (lines and lines[0].lstrip().startswith("{"))):
    return [(str(n), line) for n, line in enumerate(lines, start=1)]
  out = []
  for n, rec in iter_records(path, what="transcripts file"):
    text = rec.get("text", rec.get("transcript"))
    if text is None:
      raise ValueError(f"{path} line {n}: no field 'text' (or 'transcript')")
    out.append((str(rec.get("file_name", n)), str(text)))
  return out


def genppl(scorer, tokenizer, texts: Sequence[str], bleu_n: int = 2) -> dict:
  """GenPPL of `texts` under the judge behind `scorer`, auto-BLEU-n alongside; empty texts are counted apart."""
  ids = [np.asarray(tokenizer(t, add_special_tokens=True)["input_ids"], np.int32) for t in texts]
  keep = [i for i, x in enumerate(ids) if len(x) >= 2 and texts[i].strip()]
  nll = np.full(len(texts), np.nan)
  if keep:
    res = scorer.score([ids[i] for i in keep], reduce="mean")
    nll[keep] = -res.scores
  bleus = [auto_bleu(t, bleu_n) for t in texts]
  mean_nll = float(np.nanmean(nll)) if keep else math.nan
  return {"genppl": math.exp(mean_nll) if keep else math.nan, "mean_nll": mean_nll,
          f"auto_bleu_{bleu_n}": float(np.mean(bleus)) if bleus else math.nan,
          "num_samples": len(texts), "num_scored": len(keep), "num_empty": len(texts) - len(keep),
          "per_sample_nll": [None if math.isnan(x) else float(x) for x in nll]}


# ---------------------------------------------------------------------------------------------------------------
# End to end (slamkit's asr_perplexity): StoryCloze prompts -> continuations -> vocoder -> ASR -> judge
# ---------------------------------------------------------------------------------------------------------------
def storycloze_prompts(data_dir: str, units_path: str, num_prompts: int | None = 1000) -> list[dict]:
  """The first `num_prompts` "correct" items of a spoken StoryCloze folder (benchmark pair order), as speech prompt
  records {name, units, duration} from its slamkit features JSONL (durations are needed to cut to seconds)."""
  from slm_jax.eval import benchmarks as bm
  from slm_jax.eval import run
  from slm_jax.eval.inputs import UnitsFile
  bench = bm.load_benchmark("ssc", data_dir, units=UnitsFile(units_path))
  by_stem = {p["name"]: p for p in run.read_prompts(units_path, "speech")}
  out = []
  for pair in bench.pairs[:num_prompts]:
    name = os.path.splitext(os.path.basename(bench.items[pair.correct].source))[0]
    if by_stem[name].get("duration") is None:
      raise ValueError(f"{units_path}: record {name!r} has no 'duration' (needed to cut prompts to seconds)")
    out.append(dict(by_stem[name]))
  return out


def _read_wavs(wav_dir: str) -> list[tuple[str, np.ndarray]]:
  import soundfile as sf
  from slm_jax.units import audio as audio_lib
  paths = audio_lib.find_audio(wav_dir, "wav,flac")
  if not paths:
    raise FileNotFoundError(f"no .wav/.flac files under {wav_dir}")
  out = []
  for p in paths:
    wav, sr = sf.read(p, dtype="float32", always_2d=True)
    wav = wav.mean(axis=1) if sr == audio_lib.SAMPLE_RATE else audio_lib.load_audio(p)
    out.append((os.path.splitext(os.path.basename(p))[0], wav))
  return out


def genppl_pipeline(out_dir: str, judge: str, *, ckpt: str | None = None, data_dir: str | None = None,
                    units: str | None = None, continuations: str | None = None, wav_dir: str | None = None,
                    transcripts: str | None = None, vocoder: str | None = None, asr_model: str | None = None,
                    num_prompts: int | None = 1000, prompt_seconds: float = 3.0, sampling=None,
                    vocode_prompt: bool = True, seed: int = 0, batch_size: int = 32, asr_batch_size: int = 8,
                    mesh=None, dtype: str | None = None, bleu_n: int = 2, **scorer_kw) -> dict:
  """Runs the stages that the given files do not cover, keeping every stage's output in `out_dir`:
  continuations.jsonl (units; `wav` per record), wavs/, transcripts.jsonl, genppl.json. Start points:
  `transcripts` (judge only), `wav_dir` (ASR + judge), `continuations` (vocoder + ASR + judge), else prompts from
  `data_dir` (+ `units`) and generation by `ckpt`. `vocode_prompt`: vocode prompt + continuation, as slamkit."""
  from slm_jax.eval import run
  from slm_jax.eval.generate import SamplingConfig
  os.makedirs(out_dir, exist_ok=True)
  mesh = mesh or run.make_mesh()
  stages = {}
  if transcripts is None:
    if wav_dir is None:
      from slm_jax.vocoder import Vocoder
      from slm_jax.vocoder import records as vr
      if continuations is None:
        if not (ckpt and data_dir):
          raise ValueError("genppl from scratch needs --ckpt (the speech LM) and --data_dir (spoken StoryCloze)")
        units = units or run.find_units(data_dir)
        if not units:
          raise ValueError(f"{data_dir}: no units.jsonl / features.jsonl; give --units")
        prompts = storycloze_prompts(data_dir, units, num_prompts)
        loaded = run.load_checkpoint(ckpt, mesh, dtype=dtype)
        sampling = sampling or SamplingConfig()
        records, stats = run.generate_loaded(loaded, mesh, prompts, sampling=sampling, prompt_seconds=prompt_seconds,
                                             seed=seed, batch_size=batch_size)
        del loaded
        stages["generate"] = {"ckpt": ckpt, "prompts": len(prompts), "prompt_seconds": prompt_seconds,
                              "sampling": dataclasses.asdict(sampling), "seed": seed, **stats}
      else:
        records = [rec for _, rec in iter_records(continuations, what="continuations file")]
        stages["continuations"] = os.path.abspath(continuations)
      if not vocoder:
        raise ValueError("vocoding continuations needs --vocoder (a converted unit vocoder folder)")
      wav_dir = os.path.join(out_dir, "wavs")
      vr.vocode_continuations(Vocoder.load(vocoder), records, wav_dir, with_prompt=vocode_prompt)
      run.write_jsonl(os.path.join(out_dir, "continuations.jsonl"), records)
      stages["vocoder"] = {"vocoder": os.path.abspath(vocoder), "vocode_prompt": vocode_prompt}
    if not asr_model:
      raise ValueError("transcribing needs --asr (a CTranslate2 or transformers Whisper folder)")
    from slm_jax.eval.asr import Transcriber
    named = _read_wavs(wav_dir)
    texts = Transcriber(asr_model, batch_size=asr_batch_size)([w for _, w in named])
    transcripts = os.path.join(out_dir, "transcripts.jsonl")
    run.write_jsonl(transcripts, [{"file_name": n, "text": t} for (n, _), t in zip(named, texts)])
    stages["asr"] = {"model": os.path.abspath(asr_model), "wav_dir": os.path.abspath(wav_dir)}
  res = run.genppl_checkpoint(judge, transcripts, mesh=mesh, dtype=dtype, bleu_n=bleu_n, **scorer_kw)
  res["stages"] = stages
  run.write_json(os.path.join(out_dir, "genppl.json"), res)
  return res
