"""GenPPL and auto-BLEU of generated continuations, from transcripts made by any ASR (SPEC §6).

GenPPL = exp(mean over samples of each sample's mean token NLL) under a judge text LM run by our own model
code (the paper: Llama-3.2-1B); the judge's tokenizer adds its BOS, whose first token is context only.
auto-BLEU-n follows slamkit's `calc_auto_bleu`: the fraction of a text's word n-grams that occur elsewhere in
the same text's n-gram list.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Callable, Sequence

import numpy as np

_WORD_RE = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def word_tokenize(text: str) -> list[str]:
  """NLTK's word tokenizer when installed (slamkit uses it), else words and punctuation by regex."""
  try:
    from nltk.tokenize import NLTKWordTokenizer
    return NLTKWordTokenizer().tokenize(text)
  except ImportError:
    return _WORD_RE.findall(text)


def auto_bleu(text: str, n: int = 2, tokenize: Callable[[str], list[str]] = word_tokenize) -> float:
  tokens = tokenize(text)
  grams = [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
  if not grams:
    return 0.0
  hits = sum(1 for i, g in enumerate(grams) if g in grams[:i] or g in grams[i + 1:])
  return hits / len(grams)


def read_transcripts(path: str) -> list[tuple[str, str]]:
  """[(name, text)] from JSONL (`text` or `transcript`, with `file_name`) or plain text (one per line)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"transcripts file {path} does not exist")
  out = []
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  as_json = path.endswith(".jsonl") or (lines and lines[0].lstrip().startswith("{"))
  for n, line in enumerate(lines, start=1):
    if as_json:
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path} line {n}: not JSON ({e})") from None
      text = rec.get("text", rec.get("transcript"))
      if text is None:
        raise ValueError(f"{path} line {n}: no field 'text' (or 'transcript')")
      out.append((str(rec.get("file_name", n)), str(text)))
    else:
      out.append((str(n), line))
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
