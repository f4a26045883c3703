"""Tokenizer folders we write (checkpoints, HF exports): `save_pretrained`, then tokenizer_config.json made clean.

transformers 5 records how the tokenizer was loaded (`local_files_only`, `is_local`), names its own backend class
(`TokenizersBackend`, unknown to transformers 4), and keeps `clean_up_tokenization_spaces: true` from Llama-3's
files, which it ignores for BPE with a warning on load and on decode. The cleaned config loads without warnings in
transformers 5 and 4 and decodes the same text.
"""
from __future__ import annotations

import json
import os

CONFIG = "tokenizer_config.json"
LOAD_KEYS = ("local_files_only", "is_local", "_commit_hash", "cache_dir", "token", "revision", "trust_remote_code")


def clean_tokenizer_files(directory: str) -> None:
  """Rewrites `directory`/tokenizer_config.json in place (no-op without one)."""
  path = os.path.join(directory, CONFIG)
  if not os.path.exists(path):
    return
  with open(path) as f:
    config = json.load(f)
  for key in LOAD_KEYS:
    config.pop(key, None)
  if config.get("tokenizer_class") == "TokenizersBackend":
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
  model_type = None
  if os.path.exists(os.path.join(directory, "tokenizer.json")):
    with open(os.path.join(directory, "tokenizer.json")) as f:
      model_type = json.load(f).get("model", {}).get("type")
  if model_type == "BPE" and config.get("clean_up_tokenization_spaces"):
    config["clean_up_tokenization_spaces"] = False  # what transformers 5 does for BPE anyway, minus the warning
  with open(path, "w") as f:
    json.dump(config, f, indent=2, ensure_ascii=False)
    f.write("\n")


def save_tokenizer(tokenizer, directory: str) -> None:
  """`tokenizer.save_pretrained(directory)`, then `clean_tokenizer_files`."""
  tokenizer.save_pretrained(directory)
  clean_tokenizer_files(directory)


def special_token_ids(cfg, tokenizer) -> dict:
  """bos/eos/pad ids of an export: the tokenizer's where it has them (a model initialised at random carries its
  preset's), an eos list of the config kept when it holds the tokenizer's eos (instruct models)."""
  bos, eos, pad = cfg.bos_token_id, cfg.eos_token_id, None
  if tokenizer is not None:
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else bos
    tok_eos = tokenizer.eos_token_id
    if tok_eos is not None and not (isinstance(eos, list) and tok_eos in eos):
      eos = tok_eos
    pad = tokenizer.pad_token_id
  return {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}
