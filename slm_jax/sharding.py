"""Meshes, logical axis rules, and helpers that create, print and check shardings.

Every parameter carries `logical_axes` metadata (names below); ONE rules table maps them to the mesh axes
('data', 'fsdp', 'tensor'). Activations are constrained with the same names through `constrain`.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis (or tuple of axes, or None = replicated)
RULES: dict[str, object] = {
    # parameters
    "vocab": "tensor", "embed": "fsdp", "mlp": "tensor", "q_heads": "tensor", "kv_heads": "tensor",
    "norm": None,
    "layers": None,  # the leading axis of stacked (scan_layers) decoder-layer parameters
    # activations
    "batch": ("data", "fsdp"), "length": None, "act_embed": None, "act_mlp": "tensor",
    "act_heads": "tensor", "act_kv_heads": "tensor", "act_vocab": "tensor", "head_dim": None,
}


def resolve_mesh_shape(data: int, fsdp: int, tensor: int, device_count: int) -> dict[str, int]:
  """{'data', 'fsdp', 'tensor'} sizes on `device_count` devices; one size may be -1 to take the remaining devices.
  ValueError naming the problem otherwise. The one place a mesh shape is resolved (trainer, validation, AOT)."""
  shape = {"data": data, "fsdp": fsdp, "tensor": tensor}
  bad = [f"config.mesh.{k}={v!r}: must be >= 1 or -1 (the remaining devices)" for k, v in shape.items()
         if not isinstance(v, int) or isinstance(v, bool) or (v < 1 and v != -1)]
  if bad:
    raise ValueError("; ".join(bad))
  free = [k for k, v in shape.items() if v == -1]
  if len(free) > 1:
    raise ValueError(f"config.mesh: at most one axis may be -1, got {shape}")
  known = math.prod(v for v in shape.values() if v != -1)
  if free:
    if device_count % known:
      raise ValueError(f"config.mesh={shape}: {device_count} devices do not divide by the fixed axes' {known}")
    shape[free[0]] = device_count // known
  if math.prod(shape.values()) != device_count:
    raise ValueError(f"config.mesh={shape} needs {math.prod(shape.values())} devices, {device_count} are present")
  return shape


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices: Sequence | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default all) shaped by `resolve_mesh_shape`."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(data, fsdp, tensor, len(devices))
  return jax.make_mesh(tuple(shape[a] for a in MESH_AXES), MESH_AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES), devices=devices)


_DROPPED: set = set()


def _warn_dropped(name: str, size: int, axes: tuple, kept: tuple, mesh) -> None:
  """Logs once per (logical name, size, axes) that a dimension is not split over mesh axes it does not divide."""
  key = (name, size, axes, kept)
  if key in _DROPPED:
    return
  _DROPPED.add(key)
  lost = [f"{a}={mesh.shape[a]}" for a in axes if a not in kept]
  logging.warning("sharding: logical axis %r of size %d is not split over mesh axis %s (does not divide it)%s",
                  name, size, ", ".join(lost), f"; split over {kept[0]} only" if kept else "; replicated")


def logical_to_spec(logical: Sequence[str | None] | None, shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None) -> P:
  """PartitionSpec for logical axis names; axes that do not divide the dimension are dropped."""
  if logical is None:
    return P()
  out, used = [], set()
  for i, name in enumerate(logical):
    axes = RULES.get(name) if name is not None else None
    if name is not None and name not in RULES:
      raise KeyError(f"logical axis {name!r} has no rule in slm_jax.sharding.RULES")
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    axes = tuple(a for a in axes if a not in used)
    if mesh is not None:
      axes = tuple(a for a in axes if mesh.shape[a] > 1)
      if shape is not None and axes and shape[i] % math.prod(mesh.shape[a] for a in axes):
        kept = tuple(a for a in axes if shape[i] % mesh.shape[a] == 0)[:1]
        _warn_dropped(name, shape[i], axes, kept, mesh)
        axes = kept
    used.update(axes)
    out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return P(*out)


def constrain(x: jax.Array, logical: Sequence[str | None]) -> jax.Array:
  """with_sharding_constraint by logical names under the mesh set by `jax.set_mesh`; no-op without one."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(logical, x.shape, mesh))


def _is_var(x) -> bool:
  from flax import nnx
  return isinstance(x, nnx.Variable)


def state_shardings(abstract_state, mesh: Mesh):
  """NamedSharding for every variable of an (abstract) NNX state, from its `logical_axes` metadata."""
  def one(v):
    logical = v.get_metadata().get("logical_axes") if hasattr(v, "get_metadata") else None
    shape = v.shape if hasattr(v, "shape") else np.shape(v[...])
    if logical is None or len(logical) != len(shape):
      logical = (None,) * len(shape)
    return NamedSharding(mesh, logical_to_spec(logical, shape, mesh))
  return jax.tree.map(one, abstract_state, is_leaf=_is_var)


def path_name(path) -> str:
  """'model.layers.0.self_attn.q_proj.kernel' for a pytree key path (NNX's trailing 'value' dropped)."""
  parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
  return ".".join(p for p in parts if p not in ("value", "raw_value"))


def describe(state, min_replicated_size: int = 1 << 20, print_fn=print) -> list[tuple[str, tuple, object]]:
  """Prints each parameter's shape and PartitionSpec; raises if a large one is replicated on a >1-device mesh."""
  rows, bad = [], []
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  for path, leaf in flat:
    name = path_name(path)
    sharding = getattr(leaf, "sharding", None)
    spec = getattr(sharding, "spec", None)
    ndev = len(sharding.device_set) if sharding is not None else 1
    rows.append((name, tuple(leaf.shape), spec))
    print_fn(f"{name:60s} {str(tuple(leaf.shape)):22s} {spec}")
    if ndev > 1 and leaf.size >= min_replicated_size and sharding.is_fully_replicated:
      bad.append(name)
  if bad:
    raise ValueError(f"{len(bad)} large parameters are fully replicated: {', '.join(bad[:10])}")
  return rows
