"""The mechanical map between our parameter paths and HF tensor names.

Ours: `model.layers.3.self_attn.q_proj.kernel` [in, out]; HF: `model.layers.3.self_attn.q_proj.weight` [out, in].
Embedding: `model.embed_tokens.embedding` <-> `model.embed_tokens.weight` (rows padded on our side).
"""
from __future__ import annotations

import jax
from flax import nnx

from slm_jax.sharding import path_name


def to_hf_name(path: str) -> tuple[str, bool]:
  """(HF tensor name, transpose?) for one of our parameter paths."""
  if path.endswith(".embedding"):
    return path[: -len(".embedding")] + ".weight", False
  if path.endswith(".kernel"):
    return path[: -len(".kernel")] + ".weight", True
  return path, False


def flat_params(model_or_state) -> dict[str, object]:
  """{our path: array (or abstract ShapeDtypeStruct)} for every parameter."""
  state = nnx.state(model_or_state, nnx.Param) if isinstance(model_or_state, nnx.Module) else model_or_state
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  return {path_name(p): leaf for p, leaf in flat}


def hf_names(model_or_state) -> dict[str, tuple[str, bool]]:
  """{our path: (HF name, transpose?)}."""
  return {k: to_hf_name(k) for k in flat_params(model_or_state)}
