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

from slm_jax.data.packing import empty_batch
from slm_jax.model.config import ModelConfig
from slm_jax.model.create import model_shardings
from slm_jax.train import optimizer as opt_lib
from slm_jax.train import step as step_lib
from slm_jax.train.checkpointing import abstract_like

OBJECTIVES = ("lm", "dpo")  # dpo: preference pairs, slm_jax/train/dpo.py


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
  dpo: Any = None               # objective 'dpo': dpo.DPOParts (reference forward, bound reference)


def build_program(config, cfg: ModelConfig, mesh: Mesh, schedule_steps: int) -> Program:
  """Shardings, optimizer and jitted steps for `config` (ml_collections) and model `cfg` on `mesh`."""
  objective = config.get("objective", "lm")
  if objective not in OBJECTIVES:
    raise ValueError(f"config.objective={objective!r}: expected one of {OBJECTIVES}")
  _, _, moment_dtype = opt_lib.precision_dtypes(config.precision)
  graphdef, abstract_state, shardings = model_shardings(cfg, mesh)
  param_sh = nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, shardings), nnx.Param))
  abstract_params = abstract_like(nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, abstract_state), nnx.Param)),
                                  param_sh)
  tx, lr_fn = opt_lib.from_config(config.optim, schedule_steps, moment_dtype)
  opt_init, opt_sh = step_lib.compile_opt_init(tx, abstract_params, param_sh, mesh)
  abstract_opt = abstract_like(jax.eval_shape(tx.init, abstract_params), opt_sh)
  if objective == "dpo":
    from slm_jax.train import dpo
    train_fn, eval_fn, parts = dpo.build_steps(config, graphdef, tx, lr_fn, mesh, param_sh, opt_sh)
    return Program(mesh=mesh, cfg=cfg, graphdef=graphdef, param_shardings=param_sh, abstract_params=abstract_params,
                   tx=tx, lr_fn=lr_fn, opt_init=opt_init, opt_shardings=opt_sh, abstract_opt=abstract_opt,
                   train_step=train_fn, eval_step=eval_fn, dpo=parts)
  train_fn = step_lib.jit_train_step(
      step_lib.make_train_step(graphdef, tx, lr_fn, micro_batches=config.micro_batches,
                               loss_chunk=config.loss_chunk, nan_at_step=config.inject_nan_at_step,
                               fused_loss=config.fused_loss, param_shardings=param_sh),
      mesh, param_sh, opt_sh)
  eval_fn = step_lib.jit_eval_step(step_lib.make_eval_step(graphdef, config.loss_chunk), mesh, param_sh)
  return Program(mesh=mesh, cfg=cfg, graphdef=graphdef, param_shardings=param_sh, abstract_params=abstract_params,
                 tx=tx, lr_fn=lr_fn, opt_init=opt_init, opt_shardings=opt_sh, abstract_opt=abstract_opt,
                 train_step=train_fn, eval_step=eval_fn)


def abstract_batch(config, mesh: Mesh, *, with_ref: bool = True) -> dict:
  """ShapeDtypeStructs of one global training batch (the trainer's batch keys and dtypes) on `mesh`; objective
  'dpo' adds `ref_logps` (one float32 per sequence) unless with_ref=False (the reference forward's input), and
  with dpo.shared_prompt has one row per pair (`dpo.batch_shape`)."""
  from slm_jax.train import dpo
  sh = step_lib.batch_sharding(mesh)
  shape = dpo.batch_shape(config)
  one_row = empty_batch(1, shape[1])
  out = {k: jax.ShapeDtypeStruct(shape, v.dtype, sharding=sh) for k, v in one_row.items()}
  if config.get("objective", "lm") == "dpo" and with_ref:
    out["ref_logps"] = dpo.abstract_ref_logps(config.global_batch_size, mesh)
  return out
