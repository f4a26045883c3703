"""Hugging Face weights -> sharded NNX model, tensor by tensor (no torch model is built)."""
from __future__ import annotations

from typing import Callable, Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from slm_jax.checkpoint.weight_map import flat_params, hf_tensors
from slm_jax.model.config import ModelConfig
from slm_jax.model.create import model_shardings


class ShapeMismatch(ValueError):
  pass


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  if x.shape[0] == rows:
    return x
  if x.shape[0] > rows:
    raise ShapeMismatch(f"{x.shape[0]} rows do not fit {rows}")
  return np.concatenate([x, np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)], axis=0)


def load_params(cfg: ModelConfig, get_tensor: Callable[[str], np.ndarray], names: Mapping[str, tuple] | None,
                mesh: Mesh, progress: Callable[[str], None] | None = None,
                transform: Callable[[str, np.ndarray], np.ndarray] | None = None):
  """Builds the sharded model from `get_tensor(hf_name) -> np.ndarray [HF layout]`.

  Each tensor is transposed / vocab-padded on the host, cast to the parameter dtype and put straight onto its
  sharding, so at most one HF tensor is held in host memory at a time (with cfg.scan_layers, one stacked
  parameter: its layers' tensors are copied into one [L, ...] buffer, then placed). `transform(hf_name, array)`
  may rewrite a tensor before placement (used to grow the vocabulary). Tied models need no `lm_head.weight`.
  """
  graphdef, abstract_state, shardings = model_shardings(cfg, mesh)
  flat_abs = flat_params(abstract_state)
  flat_sh = flat_params(shardings)
  by_path: dict[str, list] = {}
  for hf_name, t in hf_tensors({k: v.shape for k, v in flat_abs.items()}).items():
    by_path.setdefault(t.path, []).append((hf_name, t))
  leaves = {}
  for path, abs_leaf in flat_abs.items():
    buf = None
    for hf_name, t in by_path[path]:
      arr = get_tensor(hf_name)
      if transform is not None:
        arr = transform(hf_name, arr)
      if t.transpose:
        arr = arr.T
      if path.endswith("embed_tokens.embedding"):
        arr = _pad_rows(arr, abs_leaf.shape[0])
      elif path == "lm_head.kernel":
        arr = _pad_rows(arr.T, abs_leaf.shape[1]).T
      want = abs_leaf.shape if t.layer is None else abs_leaf.shape[1:]
      if tuple(arr.shape) != tuple(want):
        raise ShapeMismatch(f"tensor {hf_name}: checkpoint shape {tuple(arr.shape)} (after layout change) does not "
                            f"match the model's {tuple(want)} for {path}" + ("" if t.layer is None else
                                                                             f" layer {t.layer}"))
      if t.layer is None:
        buf = np.ascontiguousarray(arr).astype(abs_leaf.dtype, copy=False)
      else:
        if buf is None:
          buf = np.empty(abs_leaf.shape, abs_leaf.dtype)
        buf[t.layer] = arr.astype(abs_leaf.dtype, copy=False)
      del arr
      if progress:
        progress(hf_name)
    leaves[path] = jax.device_put(buf, flat_sh[path])
    del buf
  state = _fill_state(abstract_state, leaves)
  return nnx.merge(graphdef, state)


def _fill_state(abstract_state, leaves: dict):
  from slm_jax.sharding import path_name
  flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_state)
  return jax.tree_util.tree_unflatten(treedef, [leaves[path_name(p)] for p, _ in flat])


def from_torch_state_dict(cfg: ModelConfig, state_dict: Mapping, mesh: Mesh):
  """Test helper: a torch model's state_dict (fp32) -> our model."""
  def get(name):
    if name not in state_dict:
      raise KeyError(f"missing tensor {name}")
    return state_dict[name].detach().float().cpu().numpy()
  return load_params(cfg, get, None, mesh)
