"""What a Hugging Face folder holds: a plain Llama / Qwen2 checkpoint or a slamkit one.

slamkit (`UnitLM`, model_type `speech_language_model`) saves the text LM under the prefix `lm.`, nests the base
model's config under `base_config`, and has already grown the vocabulary (top-level `vocab_size`, e.g. 128758).
It saves no tokenizer (slamkit rebuilds it from the base model's), so one must be given.
"""
from __future__ import annotations

import dataclasses
import json
import os

from slm_jax.checkpoint.safetensors_io import SafetensorsReader
from slm_jax.model.config import SUPPORTED_ARCHS, ModelConfig

SLAMKIT_TYPES = ("speech_language_model",)
EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


class UnknownArchitecture(ValueError):
  pass


@dataclasses.dataclass
class HFSource:
  folder: str
  kind: str                 # "hf" or "slamkit"
  hf_config: dict           # the text LM's config.json dict (slamkit: the nested base_config)
  reader: SafetensorsReader
  prefix: str               # "" or "lm."
  vocab_size: int | None    # slamkit: the grown vocabulary its config declares

  def has(self, name: str) -> bool:
    return self.prefix + name in self.reader

  def get(self, name: str):
    return self.reader.get(self.prefix + name)

  def shape(self, name: str) -> tuple:
    return self.reader.shape(self.prefix + name)

  def model_config(self, **overrides) -> ModelConfig:
    where = os.path.join(self.folder, "config.json") + (" (base_config)" if self.kind == "slamkit" else "")
    return ModelConfig.from_hf_dict(self.hf_config, where=where, **overrides)

  def embedding_rows(self) -> int:
    for name in (EMBED, HEAD):
      if self.has(name):
        return self.shape(name)[0]
    raise KeyError(f"{self.folder}: no {self.prefix}{EMBED} in the safetensors files")

  def has_tokenizer(self) -> bool:
    return any(os.path.exists(os.path.join(self.folder, f)) for f in _TOKENIZER_FILES)


def open_hf(folder: str) -> HFSource:
  """Reads config.json and the safetensors index of `folder`; raises with the reason when it cannot."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"Hugging Face folder {folder} does not exist")
  path = os.path.join(folder, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no config.json in {folder}")
  with open(path) as f:
    cfg = json.load(f)
  model_type = cfg.get("model_type")
  if model_type in SLAMKIT_TYPES or "base_config" in cfg:
    base = cfg.get("base_config")
    if not isinstance(base, dict):
      raise UnknownArchitecture(f"{path}: slamkit config without a nested base_config dict")
    kind, hf_config, prefix, vocab = "slamkit", base, "lm.", cfg.get("vocab_size")
  else:
    kind, hf_config, prefix, vocab = "hf", cfg, "", None
  if hf_config.get("model_type") not in SUPPORTED_ARCHS:
    raise UnknownArchitecture(
        f"{path}: unknown architecture model_type={hf_config.get('model_type')!r} "
        f"(architectures {hf_config.get('architectures')}); supported: {', '.join(SUPPORTED_ARCHS)}"
        + (" (read from the slamkit base_config)" if kind == "slamkit" else ""))
  reader = SafetensorsReader(folder)
  if kind == "hf" and not any(n.startswith("model.") for n in reader.names()) and any(
      n.startswith("lm.model.") for n in reader.names()):
    prefix = "lm."  # a slamkit weight file under a plain config
  return HFSource(folder, kind, hf_config, reader, prefix, vocab)
