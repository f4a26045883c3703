"""Create models directly sharded on a mesh (never a full copy on one device)."""
from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import Mesh

from slm_jax import sharding
from slm_jax.model.config import ModelConfig
from slm_jax.model.transformer import CausalLM


def abstract_model(cfg: ModelConfig) -> CausalLM:
  return nnx.eval_shape(lambda: CausalLM(cfg, rngs=nnx.Rngs(0)))


def model_shardings(cfg: ModelConfig, mesh: Mesh):
  """(graphdef, abstract state, NamedSharding tree) of the model on `mesh`."""
  graphdef, abstract_state = nnx.split(abstract_model(cfg))
  return graphdef, abstract_state, sharding.state_shardings(abstract_state, mesh)


def create_model(cfg: ModelConfig, mesh: Mesh | None = None, seed: int = 0) -> CausalLM:
  """A randomly initialised model whose parameters are created sharded by the rules table."""
  if mesh is None:
    mesh = sharding.make_mesh(fsdp=1, devices=jax.devices()[:1])
  graphdef, _, shardings = model_shardings(cfg, mesh)

  @jax.jit
  def init():
    return nnx.state(CausalLM(cfg, rngs=nnx.Rngs(seed)))

  with jax.set_mesh(mesh):
    state = jax.jit(init, out_shardings=shardings)()
  return nnx.merge(graphdef, state)
