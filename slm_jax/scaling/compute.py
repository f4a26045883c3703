"""Compute accounting: parameter counts, FLOPs (6ND and the trainer's detailed count), tokens of a run.

The paper's convention (docs/reference.md §5, §8): C = 6 * N * D, N = all parameters (embeddings included), D = training
tokens. The detailed per-token count lives in `slm_jax.train.flops` (the one FLOPs count of the project) and is
only imported from there.
"""
from __future__ import annotations

import json
import os
from typing import Iterable

from slm_jax.model.config import PRESETS, ModelConfig
from slm_jax.train.flops import flops_per_token
from slm_jax.vocab import QWEN2_5_LAYOUT, VocabLayout


def default_layout(cfg: ModelConfig) -> VocabLayout:
  """docs/reference.md §2 layout of a base model: Qwen2.5's tokenizer (151665) is shorter than its embedding matrix."""
  if cfg.arch == "qwen2" and cfg.vocab_size >= QWEN2_5_LAYOUT.base_size:
    return QWEN2_5_LAYOUT
  return VocabLayout(base_size=cfg.vocab_size)


def slm_config(cfg: ModelConfig, layout: VocabLayout | None = None) -> ModelConfig:
  """The interleaved model's config: embedding rows grown to hold the extended vocabulary, never shrunk."""
  layout = layout or default_layout(cfg)
  return cfg.replace(vocab_size=max(cfg.vocab_size, layout.size))


def param_counts(cfg: ModelConfig) -> dict:
  """All parameters, parameters without (un)embeddings, and the (un)embedding parameters, as HF counts them."""
  total = cfg.num_params(embeddings=True)
  no_embed = cfg.num_params(embeddings=False)
  return {"params": total, "params_no_embed": no_embed, "embed_params": total - no_embed}


def preset_param_table(names: Iterable[str] | None = None, extend_vocab: bool = False) -> dict[str, dict]:
  """`param_counts` of every preset (or the named ones); `extend_vocab` counts the interleaved model (docs/reference.md §2)."""
  out = {}
  for name in names if names is not None else sorted(PRESETS):
    if name not in PRESETS:
      raise KeyError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    cfg = PRESETS[name]
    out[name] = param_counts(slm_config(cfg) if extend_vocab else cfg)
  return out


def flops_6nd(params: float, tokens: float) -> float:
  """The paper's compute: 6 * N * D."""
  return 6.0 * float(params) * float(tokens)


def flops_detailed(cfg: ModelConfig, seq_len: int, tokens: float) -> float:
  """Training FLOPs from the trainer's detailed per-token count (`slm_jax.train.flops.flops_per_token`)."""
  return float(flops_per_token(cfg, seq_len)) * float(tokens)


def read_jsonl(path: str) -> list[dict]:
  """Records of a JSON-lines file; a truncated last line (a run killed mid-write) is ignored."""
  records = []
  with open(path) as f:
    lines = f.read().splitlines()
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:
        break
      raise ValueError(f"{path}:{i + 1}: not JSON ({e})") from None
  return records


def last_value(records: list[dict], keys: Iterable[str]):
  """The last value among `records` of the first key of `keys` that any record holds (None when none does)."""
  keys = list(keys)
  for rec in reversed(records):
    for k in keys:
      if rec.get(k) is not None:
        return rec[k]
  return None


def tokens_from_metrics(path: str, keys=("tokens", "train/tokens", "label_tokens")) -> float | None:
  """Training tokens a run has seen, from its metrics.jsonl (the last record holding a token count)."""
  if os.path.isdir(path):
    path = os.path.join(path, "metrics.jsonl")
  v = last_value(read_jsonl(path), keys)
  return None if v is None else float(v)
