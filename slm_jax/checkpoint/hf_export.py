"""Our Orbax checkpoint -> a Hugging Face folder that plain transformers loads (no custom code).

Writes safetensors shards of at most 5 GB (+ index), config.json (`ModelConfig.to_hf_dict`, vocab_size = the
logical vocabulary, padding rows removed), generation_config.json and the extended tokenizer. bf16 by default,
float32 on request, never fp16. Tensors are fetched one at a time: from an Orbax checkpoint by partial
restore (no model is built, host memory holds one tensor), or gathered from an in-memory model.
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
import orbax.checkpoint as ocp

from slm_jax.checkpoint import orbax_io, weight_map
from slm_jax.checkpoint.hf_import import ShapeMismatch
from slm_jax.checkpoint.hf_source import EMBED, HEAD
from slm_jax.checkpoint.hf_to_orbax import DTYPES, Progress, VocabMismatch
from slm_jax.checkpoint.safetensors_io import MAX_SHARD_BYTES, write_sharded
from slm_jax.checkpoint.staging import check_output, staged_output
from slm_jax.checkpoint.tokenizer_files import clean_tokenizer_files, save_tokenizer, special_token_ids
from slm_jax.checkpoint.weight_map import flat_params
from slm_jax.model.config import ModelConfig
from slm_jax.model.create import abstract_model
from slm_jax.vocab import VocabLayout, extend_tokenizer, unit_token

_NP_DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float32": np.dtype(np.float32)}


def _hf_order(name: str, t: weight_map.HFTensor):
  """embed, layers in numeric order, final norm, lm_head (the order transformers writes); a stacked parameter's
  layers one after the other (each stacked array is fetched once)."""
  if t.layer is not None:
    return (1, 0, t.path, t.layer)
  m = re.match(r"model\.layers\.(\d+)\.", name)
  if m:
    return (1, int(m.group(1)), name)
  return (0 if "embed_tokens" in name else 2 if name.startswith("model.") else 3, 0, name)


def hf_tensors(shapes: dict[str, tuple], fetch: Callable[[str], np.ndarray], cfg: ModelConfig,
               dtype: str) -> tuple[list[tuple[str, tuple, np.dtype]], Callable]:
  """(specs [(HF name, HF shape, dtype)] in HF order, get(HF name) -> host array in HF layout).

  shapes: {our path: shape} (per-layer or stacked layers); fetch(our path) -> that parameter as a host array
  (fetched when written; a stacked one is kept while its layers are written).
  """
  npdt = _NP_DTYPES[dtype]
  by_name = weight_map.hf_tensors(shapes)
  specs = []
  for name, t in by_name.items():
    shape = t.shape
    if name in (EMBED, HEAD):
      shape = (cfg.vocab_size,) + shape[1:]
    specs.append((name, shape, npdt))
  specs.sort(key=lambda s: _hf_order(s[0], by_name[s[0]]))
  held: dict[str, np.ndarray] = {}

  def get(name: str) -> np.ndarray:
    t = by_name[name]
    if t.layer is None:
      x = fetch(t.path)
    else:
      if t.path not in held:
        held.clear()
        held[t.path] = fetch(t.path)
      x = held[t.path][t.layer]
      if t.layer == shapes[t.path][0] - 1:
        held.clear()
    if t.transpose:
      x = x.T
    if name in (EMBED, HEAD):
      x = x[:cfg.vocab_size]  # padding rows removed
    return np.ascontiguousarray(x.astype(npdt, copy=False))
  return specs, get


class CheckpointParams:
  """The parameters of one Orbax checkpoint step, read one at a time as numpy (partial restore): no model,
  no devices, host memory of one tensor."""

  def __init__(self, directory: str, step: int):
    self.step = step
    self.mngr = ocp.CheckpointManager(os.path.abspath(directory), item_handlers={
        orbax_io.PARAMS: ocp.PyTreeCheckpointHandler(), orbax_io.META: ocp.JsonCheckpointHandler()})
    tree = self.mngr.item_metadata(step)[orbax_io.PARAMS]
    tree = getattr(tree, "tree", tree)
    self.keys, self.shapes = {}, {}
    for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      keys = tuple(getattr(k, "key", getattr(k, "idx", k)) for k in kp)
      name = ".".join(map(str, keys))
      self.keys[name], self.shapes[name] = keys, tuple(leaf.shape)

  def get(self, name: str) -> np.ndarray:
    keys = self.keys[name]

    def nest(leaf):
      for k in reversed(keys):
        leaf = {k: leaf}
      return leaf
    args = ocp.args.PyTreeRestore(item=nest(0), restore_args=nest(ocp.RestoreArgs(restore_type=np.ndarray)),
                                  partial_restore=True)
    out = self.mngr.restore(self.step, args=ocp.args.Composite(**{orbax_io.PARAMS: args}))[orbax_io.PARAMS]
    for k in keys:
      out = out[k]
    return out

  def close(self):
    self.mngr.close()


def check_shapes(shapes: dict[str, tuple], cfg: ModelConfig, where: str) -> None:
  """The checkpoint's parameters are exactly those of the model its metadata describes."""
  expected = {k: tuple(v.shape) for k, v in flat_params(abstract_model(cfg)).items()}
  lines = [f"  {k}: checkpoint {shapes.get(k, '<absent>')}, metadata implies {expected.get(k, '<absent>')}"
           for k in sorted(set(shapes) | set(expected)) if shapes.get(k) != expected.get(k)]
  if lines:
    raise ShapeMismatch(f"{where}: parameters do not match the model config in its metadata:\n" + "\n".join(lines))


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


def hf_config_dicts(cfg: ModelConfig, dtype: str, tokenizer=None) -> tuple[dict, dict]:
  """(config.json, generation_config.json) dicts; bos/eos/pad ids are the tokenizer's (`special_token_ids`)."""
  ids = special_token_ids(cfg, tokenizer)
  config = {**cfg.to_hf_dict(dtype), **ids}
  # transformers 4.x (slamkit's) reads rope and dtype from these top-level keys; 5.x accepts them alongside
  rope = {k: v for k, v in config["rope_parameters"].items() if k != "rope_theta"}
  config.update(rope_theta=cfg.rope_theta, rope_scaling=rope if cfg.rope_scaling else None, torch_dtype=dtype)
  gen = {"_from_model_config": True, **ids}
  if gen["pad_token_id"] is None:  # what transformers' generate would pick, with a warning on every call
    eos = gen["eos_token_id"]
    gen["pad_token_id"] = eos[0] if isinstance(eos, list) else eos
  return config, gen


def write_hf(out_dir: str, cfg: ModelConfig, shapes: dict[str, tuple], fetch: Callable[[str], np.ndarray],
             tokenizer, dtype: str = "bfloat16", max_shard_bytes: int = MAX_SHARD_BYTES,
             progress: Callable[[str], None] | None = None, tokenizer_files: str | None = None) -> list[str]:
  """Writes the HF folder `out_dir` (new or empty) from parameters fetched one at a time; returns the shards.

  The tokenizer is written with `save_pretrained`, or its files are copied from `tokenizer_files` (the
  checkpoint's own tokenizer folder); tokenizer_config.json is cleaned either way (`clean_tokenizer_files`).
  """
  if dtype not in DTYPES:
    raise ValueError(f"dtype {dtype!r} is not one of {DTYPES} (fp16 is never written)")
  specs, get = hf_tensors(shapes, fetch, cfg, dtype)
  files = write_sharded(out_dir, specs, get, max_shard_bytes, progress)
  config, gen = hf_config_dicts(cfg, dtype, tokenizer)
  for fname, d in (("config.json", config), ("generation_config.json", gen)):
    with open(os.path.join(out_dir, fname), "w") as f:
      json.dump(d, f, indent=2)
  if tokenizer_files:
    for f in sorted(os.listdir(tokenizer_files)):
      if os.path.isfile(os.path.join(tokenizer_files, f)):
        shutil.copy(os.path.join(tokenizer_files, f), out_dir)
    clean_tokenizer_files(out_dir)  # checkpoints written before the files were cleaned
  else:
    save_tokenizer(tokenizer, out_dir)
  return files


def export_hf(model, tokenizer, out_dir: str, dtype: str = "bfloat16", max_shard_bytes: int = MAX_SHARD_BYTES,
              progress: Callable[[str], None] | None = None) -> list[str]:
  """An in-memory (sharded) model -> HF folder `out_dir`, one tensor gathered to the host at a time."""
  params = flat_params(model)
  return write_hf(out_dir, model.cfg, {k: tuple(v.shape) for k, v in params.items()},
                  lambda path: np.asarray(jax.device_get(params[path])), tokenizer, dtype, max_shard_bytes, progress)


def convert_orbax_to_hf(ckpt_dir: str, out_dir: str, step: int | None = None, dtype: str = "bfloat16",
                        tokenizer_dir: str | None = None, overwrite: bool = False,
                        max_shard_bytes: int = MAX_SHARD_BYTES, print_fn=print) -> list[str]:
  """Orbax checkpoint (latest step unless `step`) -> HF folder, written atomically. Returns the shard names."""
  from transformers import AutoTokenizer
  if dtype not in DTYPES:
    raise ValueError(f"dtype {dtype!r} is not one of {DTYPES} (fp16 is never written)")
  check_output(out_dir, overwrite)
  meta, step = orbax_io.read_meta(ckpt_dir, step)
  cfg = orbax_io.saved_config(meta)  # the layer layout of the stored parameters
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
  params = CheckpointParams(ckpt_dir, step)
  try:
    check_shapes(params.shapes, cfg, where)
    print_fn(f"writing {dtype} safetensors to {out_dir} (streaming from {where})")
    with staged_output(out_dir, overwrite) as tmp:
      files = write_hf(tmp, cfg, params.shapes, params.get, tokenizer, dtype, max_shard_bytes,
                       Progress(len(weight_map.hf_tensors(params.shapes)), print_fn), tokenizer_files=files_dir)
  finally:
    params.close()
  print_fn(f"done: {len(files)} safetensors file(s), vocab {cfg.vocab_size}")
  return files
