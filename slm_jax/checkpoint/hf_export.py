"""Our Orbax checkpoint -> a Hugging Face folder that plain transformers loads (no custom code).

Writes safetensors shards of at most 5 GB (+ index), config.json (`ModelConfig.to_hf_dict`, vocab_size = the
logical vocabulary, padding rows removed), generation_config.json and the extended tokenizer. bf16 by default,
float32 on request, never fp16. Tensors are fetched from the model one at a time.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Callable

import jax
import ml_dtypes
import numpy as np
from jax.sharding import Mesh

from slm_jax import sharding
from slm_jax.checkpoint import orbax_io
from slm_jax.checkpoint.hf_to_orbax import DTYPES, Progress, VocabMismatch
from slm_jax.checkpoint.safetensors_io import MAX_SHARD_BYTES, write_sharded
from slm_jax.checkpoint.staging import check_output, staged_output
from slm_jax.checkpoint.weight_map import flat_params, to_hf_name
from slm_jax.model.config import ModelConfig
from slm_jax.vocab import VocabLayout, extend_tokenizer, unit_token

_NP_DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float32": np.dtype(np.float32)}


def _hf_order(name: str):
  """embed, layers in numeric order, final norm, lm_head (the order transformers writes)."""
  m = re.match(r"model\.layers\.(\d+)\.", name)
  if m:
    return (1, int(m.group(1)), name)
  return (0 if "embed_tokens" in name else 2 if name.startswith("model.") else 3, 0, name)


def hf_tensors(model, cfg: ModelConfig, dtype: str) -> tuple[list[tuple[str, tuple, np.dtype]], Callable]:
  """(specs [(HF name, HF shape, dtype)] in HF order, get(HF name) -> host array) for one model."""
  npdt = _NP_DTYPES[dtype]
  params = flat_params(model)
  by_name, specs = {}, []
  for path, arr in params.items():
    name, transpose = to_hf_name(path)
    shape = tuple(arr.shape[::-1] if transpose else arr.shape)
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
      shape = (cfg.vocab_size,) + shape[1:]
    by_name[name] = (path, transpose)
    specs.append((name, shape, npdt))
  specs.sort(key=lambda s: _hf_order(s[0]))

  def get(name: str) -> np.ndarray:
    path, transpose = by_name[name]
    x = np.asarray(jax.device_get(params[path]))
    if transpose:
      x = x.T
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
      x = x[:cfg.vocab_size]
    return np.ascontiguousarray(x.astype(npdt, copy=False))
  return specs, get


def check_tokenizer(tokenizer, meta: dict, cfg: ModelConfig, where: str) -> VocabLayout | None:
  """The tokenizer must give the layout recorded in the metadata and fit the model's vocabulary."""
  saved = meta.get("vocab_layout")
  layout = None
  if saved:
    saved_layout = VocabLayout.from_dict(saved)
    if saved_layout.num_units:
      if unit_token(0) not in tokenizer.get_vocab():
        raise VocabMismatch(f"{where}: the checkpoint has {saved_layout.num_units} speech units but the tokenizer "
                            f"has no {unit_token(0)} token (a base tokenizer? pass the extended one)")
      try:
        layout = extend_tokenizer(tokenizer, saved_layout.num_units)
      except ValueError as e:
        raise VocabMismatch(f"{where}: the tokenizer does not carry the checkpoint's vocabulary: {e}") from e
    else:
      layout = VocabLayout(len(tokenizer), 0, tokenizer.bos_token_id, tokenizer.eos_token_id)
    try:
      orbax_io.check_meta(meta, layout=layout, where=where)
    except orbax_io.MetadataMismatch as e:
      raise VocabMismatch(f"tokenizer vocabulary differs from the checkpoint's: {e}") from e
  if len(tokenizer) > cfg.vocab_size:
    raise VocabMismatch(f"{where}: tokenizer has {len(tokenizer)} tokens, the model only {cfg.vocab_size} rows")
  return layout


def hf_config_dicts(cfg: ModelConfig, dtype: str) -> tuple[dict, dict]:
  """(config.json, generation_config.json) dicts."""
  config = cfg.to_hf_dict(dtype)
  gen = {"_from_model_config": True, "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}
  return config, gen


def export_hf(model, meta: dict, tokenizer, out_dir: str, dtype: str = "bfloat16",
              max_shard_bytes: int = MAX_SHARD_BYTES, progress: Callable[[str], None] | None = None,
              tokenizer_files: str | None = None) -> list[str]:
  """Writes the HF folder `out_dir` (which must be empty or new); returns the safetensors file names.

  The tokenizer is written with `save_pretrained`, or its files are copied verbatim from `tokenizer_files`
  (the checkpoint's own tokenizer folder).
  """
  if dtype not in DTYPES:
    raise ValueError(f"dtype {dtype!r} is not one of {DTYPES} (fp16 is never written)")
  cfg = model.cfg
  specs, get = hf_tensors(model, cfg, dtype)
  files = write_sharded(out_dir, specs, get, max_shard_bytes, progress)
  config, gen = hf_config_dicts(cfg, dtype)
  for fname, d in (("config.json", config), ("generation_config.json", gen)):
    with open(os.path.join(out_dir, fname), "w") as f:
      json.dump(d, f, indent=2)
  if tokenizer_files:
    for f in sorted(os.listdir(tokenizer_files)):
      if os.path.isfile(os.path.join(tokenizer_files, f)):
        shutil.copy(os.path.join(tokenizer_files, f), out_dir)
  else:
    tokenizer.save_pretrained(out_dir)
  return files


def convert_orbax_to_hf(ckpt_dir: str, out_dir: str, step: int | None = None, dtype: str = "bfloat16",
                        tokenizer_dir: str | None = None, mesh: Mesh | None = None, overwrite: bool = False,
                        max_shard_bytes: int = MAX_SHARD_BYTES, print_fn=print) -> list[str]:
  """Orbax checkpoint (latest step unless `step`) -> HF folder, written atomically. Returns the shard names."""
  from transformers import AutoTokenizer
  if dtype not in DTYPES:
    raise ValueError(f"dtype {dtype!r} is not one of {DTYPES} (fp16 is never written)")
  check_output(out_dir, overwrite)
  meta, step = orbax_io.read_meta(ckpt_dir, step)
  cfg = ModelConfig.from_dict(meta["model_config"])
  where = f"{ckpt_dir} step {step}"
  files_dir = None
  if tokenizer_dir:
    if not os.path.isdir(tokenizer_dir):
      raise FileNotFoundError(f"tokenizer folder {tokenizer_dir} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
  else:
    files_dir = os.path.join(os.path.abspath(ckpt_dir), orbax_io.TOKENIZER_DIR)
    try:
      tokenizer = orbax_io.load_tokenizer(ckpt_dir)
    except FileNotFoundError as e:
      raise FileNotFoundError(f"{e}: this checkpoint carries no tokenizer; pass --tokenizer_dir") from e
  check_tokenizer(tokenizer, meta, cfg, where)
  print_fn(f"restoring {where}")
  model, meta, step = orbax_io.load_model(ckpt_dir, mesh if mesh is not None else sharding.make_mesh(), step)
  print_fn(f"writing {dtype} safetensors to {out_dir}")
  with staged_output(out_dir, overwrite) as tmp:
    files = export_hf(model, meta, tokenizer, tmp, dtype, max_shard_bytes,
                      Progress(len(flat_params(model)), print_fn), tokenizer_files=files_dir)
  print_fn(f"done: {len(files)} safetensors file(s), vocab {cfg.vocab_size}")
  return files
