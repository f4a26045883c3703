"""The compiled training program of a config: model shardings, optimizer, update and evaluation steps.

`build_program` is the one place that turns (config, model config, mesh) into the jitted functions the trainer
runs. It needs no weights and no data, so `tools/aot_compile.py` compiles exactly the same step for a TPU
topology or a simulated device count before any hardware is rented.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from flax import nnx
from jax.sharding import Mesh

from slm_jax.model.config import ModelConfig
from slm_jax.model.create import model_shardings
from slm_jax.train import objectives
from slm_jax.train import optimizer as opt_lib
from slm_jax.train import step as step_lib
from slm_jax.train.checkpointing import abstract_like


@dataclasses.dataclass
class Program:
  mesh: Mesh
  cfg: ModelConfig
  graphdef: Any
  param_shardings: Any          # pure dict of NamedSharding, like the params
  abstract_params: Any          # pure dict of ShapeDtypeStruct carrying those shardings
  tx: Any
  lr_fn: Callable
  opt_init: Callable            # params -> opt_state, jitted with the state's shardings as outputs
  opt_shardings: Any
  abstract_opt: Any
  train_step: Callable          # (params, opt_state, batch, step) -> (params, opt_state, metrics)
  eval_step: Callable           # (params, batch) -> sums
  objective: Any = None         # the run's objective.Objective (objectives.get(config))
  parts: Any = None             # the objective's run-time parts (DPO: reference.Reference), or None


def build_program(config, cfg: ModelConfig, mesh: Mesh, schedule_steps: int) -> Program:
  """Shardings, optimizer and jitted steps for `config` (ml_collections) and model `cfg` on `mesh`."""
  objective = objectives.get(config)
  _, _, moment_dtype = opt_lib.precision_dtypes(config.precision)
  graphdef, abstract_state, shardings = model_shardings(cfg, mesh)
  param_sh = nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, shardings), nnx.Param))
  abstract_params = abstract_like(nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, abstract_state), nnx.Param)),
                                  param_sh)
  tx, lr_fn = opt_lib.from_config(config.optim, schedule_steps, moment_dtype)
  opt_init, opt_sh = step_lib.compile_opt_init(tx, abstract_params, param_sh, mesh)
  abstract_opt = abstract_like(jax.eval_shape(tx.init, abstract_params), opt_sh)
  train_fn, eval_fn, parts = objective.build_steps(config, graphdef, tx, lr_fn, mesh, param_sh, opt_sh)
  return Program(mesh=mesh, cfg=cfg, graphdef=graphdef, param_shardings=param_sh, abstract_params=abstract_params,
                 tx=tx, lr_fn=lr_fn, opt_init=opt_init, opt_shardings=opt_sh, abstract_opt=abstract_opt,
                 train_step=train_fn, eval_step=eval_fn, objective=objective, parts=parts)


def abstract_batch(config, mesh: Mesh, *, with_extras: bool = True) -> dict:
  """ShapeDtypeStructs of one global training batch of `config`'s objective on `mesh` (with_extras=False: the
  model inputs only, without e.g. DPO's `ref_logps`)."""
  return objectives.get(config).abstract_batch(config, mesh, with_extras=with_extras)
