"""HF HubertModel folder (config.json + safetensors) -> our Flax `HubertModel`, by a mechanical name map."""
from __future__ import annotations

import json
import os
from typing import Callable

import jax
import numpy as np
from flax import nnx

from slm_jax.units.hubert import HubertConfig, HubertModel

_POS = "encoder.pos_conv_embed."
# Our pos-conv leaves -> HF names (parametrized weight norm of torch >= 2.1, then the older weight_g / weight_v).
_POS_NAMES = {"weight_g": ("conv.parametrizations.weight.original0", "conv.weight_g"),
              "weight_v": ("conv.parametrizations.weight.original1", "conv.weight_v"),
              "bias": ("conv.bias",)}
_IGNORED = ("masked_spec_embed",)


def _path_name(path) -> str:
  parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
  return ".".join(p for p in parts if p not in ("value", "raw_value", ""))


def hf_names(ours: str) -> tuple[tuple[str, ...], Callable[[np.ndarray], np.ndarray]]:
  """Our parameter path -> (candidate HF tensor names, HF array -> our layout)."""
  if ours.startswith(_POS):
    leaf = ours[len(_POS):]
    names = tuple(_POS + n for n in _POS_NAMES[leaf])
    if leaf == "weight_v":
      return names, lambda a: np.transpose(a, (2, 1, 0))  # [D, D/g, K] -> [K, D/g, D]
    if leaf == "weight_g":
      return names, lambda a: a.reshape(-1)  # [1, 1, K] -> [K]
    return names, lambda a: a
  if ours.endswith(".kernel"):
    name = ours[:-len("kernel")] + "weight"
    if ".conv_layers." in ours:
      return (name,), lambda a: np.transpose(a, (2, 1, 0))  # [Cout, Cin, K] -> [K, Cin, Cout]
    return (name,), lambda a: a.T  # Linear [out, in] -> [in, out]
  return (ours,), lambda a: a


def _open_tensors(path: str):
  """name -> loader for every tensor of the folder's safetensors (one file or a sharded index)."""
  from safetensors import safe_open
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  elif os.path.exists(os.path.join(path, "model.safetensors")):
    files = ["model.safetensors"]
  else:
    raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json (convert .bin / fairseq "
                            "checkpoints to a transformers HubertModel folder first)")
  table = {}
  for fn in files:
    handle = safe_open(os.path.join(path, fn), framework="flax")  # "flax" reads bf16; "np" cannot
    for k in handle.keys():
      table[k] = (handle, k)
  return table


def load_hubert(path: str, dtype=None) -> HubertModel:
  """Our HubertModel with the weights of a HF HubertModel folder (a `hubert.` prefix, as in HubertForCTC, is
  accepted). Parameters are float32 unless `dtype` is given."""
  cfg = HubertConfig.from_dir(path)
  table = _open_tensors(path)
  prefix = "hubert." if any(k.startswith("hubert.") for k in table) else ""
  abstract = nnx.eval_shape(lambda: HubertModel(cfg, nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  flat, treedef = jax.tree_util.tree_flatten_with_path(state)
  leaves, used = [], set()
  for kp, leaf in flat:
    ours = _path_name(kp)
    names, fix = hf_names(ours)
    found = next((prefix + n for n in names if prefix + n in table), None)
    if found is None:
      raise KeyError(f"{path}: tensor {names[0]!r} (for {ours}) not found in the checkpoint")
    handle, key = table[found]
    arr = fix(np.asarray(handle.get_tensor(key), dtype=np.float32))
    if tuple(arr.shape) != tuple(leaf.shape):
      raise ValueError(f"{path}: tensor {found} has shape {arr.shape} after layout change, expected {leaf.shape}")
    leaves.append(jax.numpy.asarray(arr, dtype=dtype or leaf.dtype))
    used.add(found)
  unused = [k for k in table if k.startswith(prefix) and k not in used and not k.endswith(_IGNORED)]
  if unused:
    raise ValueError(f"{path}: tensors not used by HubertModel (another architecture?): {unused[:5]}")
  return nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, leaves))
