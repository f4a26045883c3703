"""Where a run's model, vocabulary and tokenizer come from: TWIST init from a HF folder or an Orbax checkpoint
made by the conversion tool, a random init (demo, tests), or the run's own checkpoint on resume.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from slm_jax import assets
from slm_jax.checkpoint import orbax_io
from slm_jax.model.config import ModelConfig, preset
from slm_jax.model.create import create_model
from slm_jax.vocab import VocabLayout, extend_tokenizer

INIT_KINDS = ("hf", "orbax", "random")
# named layouts for runs without a tokenizer (synthetic data, speech-only)
LAYOUTS = {
    "slam": VocabLayout(base_size=2, num_units=500, bos_id=1, eos_id=1),  # PAD 0, <S> 1, <Un i> = i + 2
}


@dataclasses.dataclass
class Start:
  """What a fresh run starts from."""
  cfg: ModelConfig
  layout: VocabLayout
  tokenizer: object | None
  params: dict | None   # nnx pure dict on the mesh; None when only the structure is known (resume)
  source: dict


def runtime_overrides(config, param_dtype: str, dtype: str) -> dict:
  m = config.model
  return dict(param_dtype=param_dtype, dtype=dtype, attention_impl=m.attention_impl, remat=bool(m.remat),
              remat_policy=m.get("remat_policy", "nothing_saveable"),
              scan_layers=bool(m.scan_layers))


def model_config(config, base: ModelConfig, init_vocab: int, param_dtype: str, dtype: str,
                 layout: VocabLayout | None = None) -> ModelConfig:
  """The run's model config: the structure of its init source `base` (a checkpoint's metadata, a HF config.json or
  the preset) with the run-time settings (`runtime_overrides`), the vocabulary (config.model.vocab_size when set,
  else `init_vocab`: the init's rows, or the layout's size for a random init), the special ids of `layout` (random
  inits) and config.model.overrides. The one derivation the trainer's fresh start and the AOT compile share."""
  vocab = config.model.vocab_size if config.model.vocab_size > 0 else init_vocab
  special = dict(bos_token_id=layout.bos_id, eos_token_id=layout.eos_id) if layout is not None else {}
  over = {k: v for k, v in config.model.overrides.items()}
  return base.replace(**runtime_overrides(config, param_dtype, dtype), vocab_size=vocab, **special, **over)


def _pure(model) -> dict:
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _truncate_vocab(params: dict, cfg: ModelConfig, vocab: int, mesh: Mesh) -> tuple[dict, ModelConfig]:
  """Keeps the first `vocab` rows of the embedding / head (transformers' resize_token_embeddings to fewer)."""
  from slm_jax.model.create import model_shardings
  new_cfg = cfg.replace(vocab_size=vocab)
  _, abstract, shardings = model_shardings(new_cfg, mesh)
  rows = new_cfg.padded_vocab_size
  emb = np.asarray(params["model"]["embed_tokens"]["embedding"])[:vocab]
  emb = np.concatenate([emb, np.zeros((rows - vocab, emb.shape[1]), emb.dtype)])
  sh = nnx.to_pure_dict(shardings)
  params["model"]["embed_tokens"]["embedding"] = jax.device_put(emb, sh["model"]["embed_tokens"]["embedding"])
  if "lm_head" in params and params["lm_head"]:
    head = np.asarray(params["lm_head"]["kernel"])[:, :vocab]
    head = np.concatenate([head, np.zeros((head.shape[0], rows - vocab), head.dtype)], axis=1)
    params["lm_head"]["kernel"] = jax.device_put(head, sh["lm_head"]["kernel"])
  return params, new_cfg


def fresh_start(config, mesh: Mesh, param_dtype: str, dtype: str) -> Start:
  """Model, layout and tokenizer for step 0 of a run, from `config.init`."""
  kind, path = config.init.kind, config.init.path
  rt = runtime_overrides(config, param_dtype, dtype)
  if kind not in INIT_KINDS:
    raise ValueError(f"config.init.kind={kind!r}; choose one of {', '.join(INIT_KINDS)}")
  if kind in ("hf", "orbax") and not os.path.isdir(path):
    raise FileNotFoundError(f"config.init.path={path!r} is not a folder (init.kind={kind})")
  speech_only = config.vocab.layout == "slam"
  if kind == "orbax":
    step = None if config.init.step < 0 else config.init.step
    model, meta, got = orbax_io.load_model(path, mesh, step, cfg_overrides=rt)
    layout = VocabLayout.from_dict(meta["vocab_layout"]) if meta.get("vocab_layout") else None
    tok_dir = os.path.join(path, orbax_io.TOKENIZER_DIR)
    tokenizer = orbax_io.load_tokenizer(path) if os.path.isdir(tok_dir) else None
    cfg, params = model.cfg, _pure(model)
    source = {"kind": "orbax", "path": os.path.abspath(path), "step": got}
  elif kind == "hf":
    from slm_jax.checkpoint.hf_to_orbax import import_hf
    num_units = 0 if speech_only else config.vocab.num_units
    model, meta, tokenizer = import_hf(path, mesh, num_units=num_units, dtype=param_dtype,
                                       tokenizer_dir=assets.resolve(config.vocab.tokenizer) or None,
                                       seed=config.seed, scan_layers=rt["scan_layers"])
    layout = VocabLayout.from_dict(meta["vocab_layout"])
    cfg = ModelConfig.from_dict(meta["model_config"]).replace(**rt)
    params = _pure(model)
    source = {"kind": "hf", "path": os.path.abspath(path)}
  else:
    tokenizer, layout = None, None
    if config.vocab.tokenizer:
      from transformers import AutoTokenizer
      tok_dir = assets.resolve(config.vocab.tokenizer)
      if not os.path.isdir(tok_dir):
        raise FileNotFoundError(f"config.vocab.tokenizer={config.vocab.tokenizer!r} is not a folder")
      tokenizer = AutoTokenizer.from_pretrained(tok_dir)
      layout = extend_tokenizer(tokenizer, config.vocab.num_units)
    cfg = preset(config.model.preset, **rt)
    params, source = None, {"kind": "random", "seed": config.seed}
  if speech_only:
    layout, tokenizer = LAYOUTS["slam"], None
  elif layout is None:
    if config.vocab.layout:
      raise ValueError(f"unknown config.vocab.layout {config.vocab.layout!r}; known: {', '.join(LAYOUTS)}")
    layout = VocabLayout(base_size=config.vocab.base_size, num_units=config.vocab.num_units)
  if kind == "random":  # special ids from the tokenizer / layout, never the preset's
    cfg = model_config(config, cfg, layout.size, param_dtype, dtype, layout)
    params = _pure(create_model(cfg, mesh, seed=config.seed))
  else:
    loaded = cfg
    cfg = model_config(config, loaded, loaded.vocab_size, param_dtype, dtype)
    if cfg.vocab_size < loaded.vocab_size:
      logging.info("init: keeping the first %d of %d vocabulary rows", cfg.vocab_size, loaded.vocab_size)
      params, _ = _truncate_vocab(params, loaded, cfg.vocab_size, mesh)
    elif cfg.vocab_size != loaded.vocab_size:
      raise ValueError(f"config.model.vocab_size={cfg.vocab_size} but {path} has {loaded.vocab_size}: growing the "
                       "vocabulary is done by the conversion (tools/convert_hf_to_orbax.py --add_speech_units)")
  return Start(cfg, layout, tokenizer, params, source)
