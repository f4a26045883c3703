"""The mechanical map between our parameter paths and HF tensor names.

Ours: `model.layers.3.self_attn.q_proj.kernel` [in, out]; HF: `model.layers.3.self_attn.q_proj.weight` [out, in].
Embedding: `model.embed_tokens.embedding` <-> `model.embed_tokens.weight` (rows padded on our side).
Stacked layers (cfg.scan_layers): `model.layers.self_attn.q_proj.kernel` [L, in, out] holds HF's
`model.layers.{i}.self_attn.q_proj.weight` as row i (transposed); import stacks, export slices.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from slm_jax.sharding import path_name

LAYERS = "model.layers."


class HFTensor(NamedTuple):
  """Where one HF tensor lives in our parameters: `path`, row `layer` of its leading axis (None: the whole
  array), transposed or not, and its HF shape."""
  path: str
  layer: int | None
  transpose: bool
  shape: tuple


def to_hf_name(path: str) -> tuple[str, bool]:
  """(HF tensor name, transpose?) for one of our per-layer (unstacked) parameter paths."""
  if path.endswith(".embedding"):
    return path[: -len(".embedding")] + ".weight", False
  if path.endswith(".kernel"):
    return path[: -len(".kernel")] + ".weight", True
  return path, False


def stacked_rest(path: str) -> str | None:
  """'self_attn.q_proj.kernel' for a stacked layer path `model.layers.self_attn.q_proj.kernel`; None for the
  others (per-layer `model.layers.3....` included)."""
  if not path.startswith(LAYERS):
    return None
  rest = path[len(LAYERS):]
  return None if rest.split(".", 1)[0].isdigit() else rest


def flat_params(model_or_state) -> dict[str, object]:
  """{our path: array (or abstract ShapeDtypeStruct)} for every parameter."""
  state = nnx.state(model_or_state, nnx.Param) if isinstance(model_or_state, nnx.Module) else model_or_state
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  return {path_name(p): leaf for p, leaf in flat}


def hf_tensors(shapes: Mapping[str, tuple]) -> dict[str, HFTensor]:
  """{HF name: HFTensor} for our parameters' shapes {our path: shape} in either layer layout, in `shapes`' order
  (a stacked parameter's layers one after the other)."""
  out = {}
  for path, shape in shapes.items():
    shape = tuple(shape)
    rest = stacked_rest(path)
    if rest is None:
      name, transpose = to_hf_name(path)
      out[name] = HFTensor(path, None, transpose, shape[::-1] if transpose else shape)
      continue
    for i in range(shape[0]):
      name, transpose = to_hf_name(f"{LAYERS}{i}.{rest}")
      out[name] = HFTensor(path, i, transpose, shape[:0:-1] if transpose else shape[1:])
  return out


def hf_names(model_or_state) -> dict[str, HFTensor]:
  """{HF name: HFTensor} of a model or (abstract) state."""
  return hf_tensors({k: tuple(v.shape) for k, v in flat_params(model_or_state).items()})


def relayout_layers(params: dict, stacked: bool) -> dict:
  """An nnx pure dict of the model's parameters with its decoder layers stacked ({name: [L, ...]}) or per layer
  ({i: {name: [...]}}); returned as is when already so. Works on numpy and jax arrays (inside jit too)."""
  layers = params["model"]["layers"]
  per_layer = all(isinstance(k, int) or str(k).isdigit() for k in layers)
  if per_layer != stacked:
    return params
  if stacked:
    new = jax.tree.map(lambda *xs: jnp.stack(xs), *[layers[k] for k in sorted(layers, key=int)])
  else:
    n = jax.tree.leaves(layers)[0].shape[0]
    new = {i: jax.tree.map(lambda a, i=i: a[i], layers) for i in range(n)}
  return {**params, "model": {**params["model"], "layers": new}}
