"""Orbax checkpoints of ours: one layout shared by the conversion tools, the trainer and the evaluator.

A checkpoint directory is an Orbax CheckpointManager directory; each step folder holds the items
`params` (nnx pure dict of the Param state), `meta` (JSON, see `make_meta`) and, for training checkpoints,
`opt_state`, `train_state` and `data` (the grain iterator state). The extended tokenizer sits in
`<dir>/tokenizer/`. Loading checks the metadata against what the caller expects and prints a readable diff.
The decoder layers are stored as the model held them: per layer, or stacked [L, ...] (scan_layers; the meta's
`layers_stacked`); `load_model` converts to the layout asked for, a training resume must ask for the saved one.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from slm_jax.checkpoint.weight_map import relayout_layers
from slm_jax.model.config import ModelConfig
from slm_jax.model.create import model_shardings
from slm_jax.vocab import VocabLayout

PARAMS, META, OPT_STATE, TRAIN_STATE, DATA = "params", "meta", "opt_state", "train_state", "data"
TOKENIZER_DIR = "tokenizer"
SCHEMA_VERSION = 1
LAYERS_STACKED = "layers_stacked"  # meta key: True when params hold the decoder layers stacked; absent: per layer


class MetadataMismatch(ValueError):
  pass


def make_meta(cfg: ModelConfig, layout: VocabLayout | None, dtype: str, **extra) -> dict:
  """The metadata of a checkpoint of a model built from `cfg` (its layer layout follows cfg.scan_layers)."""
  return {"schema_version": SCHEMA_VERSION, "model_config": cfg.to_dict(), LAYERS_STACKED: cfg.scan_layers,
          "vocab_layout": None if layout is None else layout.to_dict(), "dtype": dtype, **extra}


def saved_config(meta: dict) -> ModelConfig:
  """The model config of the parameters as stored: scan_layers says whether the layers are stacked (checkpoints
  written before the stacked layout hold per-layer parameters whatever their scan_layers)."""
  return ModelConfig.from_dict(meta["model_config"]).replace(scan_layers=bool(meta.get(LAYERS_STACKED, False)))


def check_layers_layout(meta: dict, cfg: ModelConfig, where: str = "checkpoint") -> None:
  """Raises MetadataMismatch when the checkpoint's layers are stored in the other layout than `cfg` builds.
  For a training resume: the optimizer state has its parameters' layout, so a run resumes with the scan_layers it
  saved with (`load_model`, which reads parameters alone, converts instead)."""
  stacked = saved_config(meta).scan_layers
  if stacked != cfg.scan_layers:
    raise MetadataMismatch(
        f"{where} stores the decoder layers {'stacked (scan_layers=True)' if stacked else 'per layer'} but the run "
        f"asks for scan_layers={cfg.scan_layers}: resume with --config.model.scan_layers={stacked}, or start a new "
        "run from this checkpoint (init.kind=orbax converts the layout)")


def diff_dicts(saved: dict, expected: dict, prefix: str = "") -> list[str]:
  """Lines `key: saved X, expected Y` for every differing leaf."""
  out = []
  for k in sorted(set(saved) | set(expected)):
    a, b = saved.get(k, "<absent>"), expected.get(k, "<absent>")
    if isinstance(a, dict) and isinstance(b, dict):
      out += diff_dicts(a, b, f"{prefix}{k}.")
    elif a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)):
      out.append(f"  {prefix}{k}: checkpoint has {a!r}, expected {b!r}")
  return out


def check_meta(saved: dict, *, cfg: ModelConfig | None = None, layout: VocabLayout | None = None,
               where: str = "checkpoint") -> None:
  """Raises MetadataMismatch with a readable diff when structure or vocabulary differ from expectations."""
  lines = []
  if cfg is not None:
    lines += diff_dicts(ModelConfig.from_dict(saved["model_config"]).structural_dict(), cfg.structural_dict(),
                        "model_config.")
  if layout is not None:
    lines += diff_dicts(saved.get("vocab_layout") or {}, layout.to_dict(), "vocab_layout.")
  if lines:
    raise MetadataMismatch(f"{where} does not match what was asked for:\n" + "\n".join(lines))


def manager(directory: str, **options) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(os.path.abspath(directory), options=ocp.CheckpointManagerOptions(**options))


def params_pure(model: nnx.Module) -> dict:
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def save_model(directory: str, model, meta: dict, step: int = 0, tokenizer=None,
               concurrent_gb: float | None = None) -> None:
  """Writes params + meta as step `step` (atomic: Orbax renames a finished temporary folder).

  `concurrent_gb` caps the bytes Orbax writes at once (it must exceed the largest parameter); without it
  Orbax encodes every parameter at once, doubling host memory on CPU.
  """
  handlers = None if concurrent_gb is None else {
      PARAMS: ocp.StandardCheckpointHandler(save_concurrent_gb=concurrent_gb), META: ocp.JsonCheckpointHandler()}
  mngr = ocp.CheckpointManager(os.path.abspath(directory), item_handlers=handlers)
  mngr.save(step, args=ocp.args.Composite(**{PARAMS: ocp.args.StandardSave(params_pure(model)),
                                            META: ocp.args.JsonSave(meta)}))
  mngr.wait_until_finished()
  mngr.close()
  if tokenizer is not None:
    from slm_jax.checkpoint.tokenizer_files import save_tokenizer
    save_tokenizer(tokenizer, os.path.join(directory, TOKENIZER_DIR))


def read_meta(directory: str, step: int | None = None) -> tuple[dict, int]:
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
  mngr = manager(directory)
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no complete checkpoint step in {directory}")
  meta = mngr.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
  mngr.close()
  return meta, step


def load_model(directory: str, mesh: Mesh, step: int | None = None, cfg_overrides: dict | None = None,
               expect_cfg: ModelConfig | None = None, expect_layout: VocabLayout | None = None):
  """(model sharded on `mesh`, meta, step). Works on conversion and training checkpoints alike; parameters
  stored in the other layer layout than the model's (cfg_overrides' scan_layers) are stacked / unstacked."""
  meta, step = read_meta(directory, step)
  check_meta(meta, cfg=expect_cfg, layout=expect_layout, where=f"{directory} step {step}")
  cfg = ModelConfig.from_dict({**meta["model_config"], **(cfg_overrides or {})})
  stored = cfg.replace(scan_layers=saved_config(meta).scan_layers)
  graphdef, abstract_state, shardings = model_shardings(cfg, mesh)
  mngr = manager(directory)
  restored = mngr.restore(step, args=ocp.args.Composite(**{PARAMS: ocp.args.StandardRestore(
      _restore_target(stored, mesh))}))[PARAMS]
  mngr.close()
  if stored.scan_layers != cfg.scan_layers:
    out_sh = nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, shardings), nnx.Param))
    donate = () if jax.default_backend() == "cpu" else (0,)  # XLA:CPU cannot reuse donated buffers
    with jax.set_mesh(mesh):
      restored = jax.jit(lambda p: relayout_layers(p, cfg.scan_layers), out_shardings=out_sh,
                         donate_argnums=donate)(restored)
  nnx.replace_by_pure_dict(abstract_state, restored)
  return nnx.merge(graphdef, abstract_state), meta, step


def _restore_target(cfg: ModelConfig, mesh: Mesh) -> dict:
  """Pure dict of ShapeDtypeStructs (with shardings) of `cfg`'s parameters on `mesh`."""
  graphdef, abstract_state, shardings = model_shardings(cfg, mesh)
  params_abs = nnx.state(nnx.merge(graphdef, abstract_state), nnx.Param)
  return nnx.to_pure_dict(jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), params_abs,
      nnx.state(nnx.merge(graphdef, shardings), nnx.Param)))


def load_tokenizer(directory: str):
  from transformers import AutoTokenizer
  path = os.path.join(directory, TOKENIZER_DIR)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no tokenizer folder {path}")
  return AutoTokenizer.from_pretrained(path)
