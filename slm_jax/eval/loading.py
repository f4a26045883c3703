"""Load a model for evaluation: an Orbax checkpoint of ours or a Hugging Face / slamkit folder."""
from __future__ import annotations

import dataclasses
import os

from jax.sharding import Mesh

from slm_jax.checkpoint import orbax_io
from slm_jax.vocab import Encoder, VocabLayout


@dataclasses.dataclass
class Loaded:
  model: object
  tokenizer: object
  layout: VocabLayout | None
  info: dict            # path, kind, step, dtype

  def encoder(self) -> Encoder:
    if self.layout is None:
      raise ValueError(f"{self.info['path']} has no speech vocabulary (a plain text LM)")
    return Encoder(self.tokenizer, self.layout)


def load_checkpoint(path: str, mesh: Mesh, step: int | None = None, dtype: str | None = None,
                    num_units: int = 500, tokenizer_dir: str | None = None) -> Loaded:
  """Orbax dir (with `tokenizer/`) or HF folder (config.json + safetensors); dtype overrides the compute dtype.

  HF folders go through the conversion importer (`slm_jax.checkpoint.hf_to_orbax.import_hf`): a speech LM's
  vocabulary is checked (or grown) to `num_units` units; give num_units=0 for a plain text LM (a GenPPL judge).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint {path} does not exist")
  if os.path.isfile(os.path.join(path, "config.json")):
    from slm_jax.checkpoint.hf_to_orbax import import_hf
    model, meta, tok = import_hf(path, mesh, num_units=num_units, dtype=dtype or "float32",
                                 tokenizer_dir=tokenizer_dir)
    layout = VocabLayout.from_dict(meta["vocab_layout"]) if meta.get("vocab_layout") else None
    if layout is not None and layout.num_units == 0:
      layout = None
    return Loaded(model, tok, layout, {"path": os.path.abspath(path), "kind": "hf", "step": None,
                                       "dtype": dtype or "float32"})
  overrides = {"dtype": dtype} if dtype else None
  model, meta, got_step = orbax_io.load_model(path, mesh, step, cfg_overrides=overrides)
  tok = _tok(tokenizer_dir) if tokenizer_dir else orbax_io.load_tokenizer(path)
  layout = VocabLayout.from_dict(meta["vocab_layout"]) if meta.get("vocab_layout") else None
  if layout is not None and layout.num_units == 0:
    layout = None
  return Loaded(model, tok, layout, {"path": os.path.abspath(path), "kind": "orbax", "step": int(got_step),
                                     "dtype": model.cfg.dtype})


def _tok(path: str):
  from transformers import AutoTokenizer
  return AutoTokenizer.from_pretrained(path)
