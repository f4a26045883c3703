"""Ahead-of-time compilation of a config's training step for a target that need not be present.

The target is a TPU topology (`jax.experimental.topologies`, needs the `tpu` extra: libtpu) or the host's own
(possibly simulated) devices. The step is `program.build_program`'s, the one the trainer runs, lowered with
abstract parameters, optimizer state and batch: no weights, no data. `compile_report` gives per-device bytes
from `compiled.memory_analysis()` and whether they fit the device's memory; the objective adds what it keeps
beside the step (`Objective.memory_report`: DPO's reference model, its params and its forward, a second program).
"""
from __future__ import annotations

import json
import os
import re
import time

import jax
import numpy as np

from slm_jax import sharding
from slm_jax.model.config import ModelConfig, preset
from slm_jax.model.transformer import resolve_attention_impl
from slm_jax.train import optimizer as opt_lib
from slm_jax.train.init import LAYOUTS
from slm_jax.train.init import model_config as init_model_config
from slm_jax.train.memory import program_bytes, state_bytes
from slm_jax.train.program import abstract_batch, build_program
from slm_jax.vocab import LLAMA3_LAYOUT, QWEN2_5_LAYOUT

GB = 1e9
# memory per chip (bytes) by jax device_kind, for targets whose devices cannot report it (v5e: the 15.75 GiB
# the TPU compiler allows of its 16 GiB)
HBM_BYTES = {"TPU v5 lite": int(15.75 * 2**30), "TPU v5e": int(15.75 * 2**30), "TPU v5p": 95 * 2**30, "TPU v5": 95 * 2**30,
             "TPU v6 lite": 32 * 2**30, "TPU v4": 32 * 2**30}
# tokenizer sizes of the base models (the vocabulary is grown from them by units + 2 markers)
BASE_TOKENIZER = {"llama": LLAMA3_LAYOUT.base_size, "qwen2": QWEN2_5_LAYOUT.base_size}


def init_dir(config) -> str | None:
  """config.init.path when it holds the model's structure: a HF folder (config.json) or, for init.kind='orbax',
  a folder with a complete checkpoint step (its metadata); else None (the structure comes from the preset)."""
  path = os.path.expanduser(config.init.path) if config.init.path else ""
  if not path or not os.path.isdir(path):
    return None
  if config.init.kind == "orbax":
    from slm_jax.checkpoint import orbax_io
    try:
      orbax_io.read_meta(path, None if config.init.step < 0 else config.init.step)
    except (FileNotFoundError, ValueError):
      return None
    return path
  return path if os.path.isfile(os.path.join(path, "config.json")) else None


def model_config(config, init_dir: str | None = None) -> ModelConfig:
  """The trainer's model config for `config` without loading weights or a tokenizer: `init.model_config` of the
  init's structure and vocabulary read from files.

  Structure from `init_dir`: a HF folder's config.json, or an Orbax checkpoint's metadata (init.kind='orbax',
  vocabulary included); else the config's preset. The init's vocabulary: the checkpoint's rows; a random init's
  layout (the named `vocab.layout`, or base_size + units + 2 markers); a HF import's base tokenizer (by
  architecture) grown by `vocab.num_units` units + 2 markers, never below the checkpoint's embedding rows (as the
  import does).
  """
  param_dtype, dtype, _ = opt_lib.precision_dtypes(config.precision)
  orbax = bool(init_dir) and config.init.kind == "orbax"
  if orbax:
    from slm_jax.checkpoint import orbax_io
    meta, _ = orbax_io.read_meta(init_dir, None if config.init.step < 0 else config.init.step)
    base = ModelConfig.from_dict(meta["model_config"])
  elif init_dir:
    base = ModelConfig.from_hf_dir(init_dir)
  else:
    base = preset(config.model.preset)
  if orbax:
    vocab = base.vocab_size
  elif config.vocab.layout:
    vocab = LAYOUTS[config.vocab.layout].size
  elif config.init.kind == "random" and config.vocab.base_size:
    vocab = config.vocab.base_size + config.vocab.num_units + 2
  else:
    vocab = max(BASE_TOKENIZER[base.arch] + config.vocab.num_units + (2 if config.vocab.num_units else 0),
                base.vocab_size)
  return init_model_config(config, base, vocab, param_dtype, dtype)


def topology_devices(topology: str) -> list:
  """Abstract devices of a TPU topology such as 'v5e:2x4', 'v5p:2x2x1', 'v4:2x2x1' (needs libtpu)."""
  from jax.experimental import topologies
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # describes devices only: claims no TPU
  try:
    try:
      desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
    except Exception as e:  # noqa: BLE001 - slices smaller than one host (v5e:1x1): one host holds them all
      if "chips_per_host_bounds" not in str(e):
        raise
      dims = [int(x) for x in topology.split(":")[-1].split("x")]
      desc = topologies.get_topology_desc(platform="tpu", topology_name=topology,
                                          chips_per_host_bounds=(dims + [1, 1])[:3])
  except Exception as e:  # noqa: BLE001 - libtpu missing or an unknown name: say which
    raise RuntimeError(f"cannot describe TPU topology {topology!r} ({type(e).__name__}: {e}); it needs libtpu: "
                       "pip install -e .[tpu]") from e
  return list(desc.devices)


def cores_per_chip(devices: list) -> int:
  """Devices per chip: 2 for v4 topologies (one device per TensorCore), else 1."""
  chips = {tuple(d.coords) for d in devices if getattr(d, "coords", None) is not None}
  return len(devices) // len(chips) if chips else 1


def mesh_for(config, devices: list) -> jax.sharding.Mesh:
  """The trainer's (data, fsdp, tensor) mesh over `devices`; several devices per chip (v4) are laid out by
  their ids instead of by jax.make_mesh's chip-aware ordering."""
  m = config.mesh
  if cores_per_chip(devices) == 1:
    return sharding.make_mesh(m.data, m.fsdp, m.tensor, devices=devices)
  shape = sharding.resolve_mesh_shape(m.data, m.fsdp, m.tensor, len(devices))
  arr = np.array(sorted(devices, key=lambda d: d.id)).reshape([shape[a] for a in sharding.MESH_AXES])
  return jax.sharding.Mesh(arr, sharding.MESH_AXES,
                           axis_types=(jax.sharding.AxisType.Auto,) * len(sharding.MESH_AXES))


def device_memory(device, per_chip: int = 1) -> tuple[int | None, str]:
  """(bytes, source) of one device's memory: its own report, else the HBM table by device kind (per chip,
  divided among the `per_chip` devices of a chip)."""
  try:
    stats = device.memory_stats() or {}
  except Exception:  # noqa: BLE001 - abstract topology devices have none
    stats = {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), "memory_stats"
  kind = getattr(device, "device_kind", "")
  if kind in HBM_BYTES:
    return HBM_BYTES[kind] // per_chip, f"table ({kind}{f', {per_chip} devices per chip' if per_chip > 1 else ''})"
  return None, f"unknown ({kind})"


_OOM = re.compile(r"(?:HLO temporaries|Used) \(?([\d.]+)([GMK])\)?.*?(?:exceeds available HBM|of) \(?([\d.]+)([GMK])",
                  re.S)


def compile_step(config, cfg: ModelConfig, mesh, schedule_steps: int = 1000):
  """(program, compiled train step) for abstract params, optimizer state and batch on `mesh`."""
  prog = build_program(config, cfg, mesh, schedule_steps)
  batch = abstract_batch(config, mesh)
  step = jax.ShapeDtypeStruct((), np.int32, sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  with jax.set_mesh(mesh):
    lowered = prog.train_step.jitted.lower(prog.abstract_params, prog.abstract_opt, batch, step)
  return prog, lowered.compile()


def compile_report(config, cfg: ModelConfig, mesh, target: str, schedule_steps: int = 1000,
                   hbm_bytes: int | None = None) -> dict:
  """Compiles the step and reports per-device GB, the device memory and whether it fits (one JSON-able dict)."""
  dev = mesh.devices.flat[0]
  hbm, hbm_src = (hbm_bytes, "flag") if hbm_bytes else device_memory(dev, cores_per_chip(list(mesh.devices.flat)))
  rec = {"target": target, "devices": int(mesh.size), "device_kind": getattr(dev, "device_kind", "?"),
         "mesh": {k: int(v) for k, v in mesh.shape.items()}, "model": f"{cfg.arch} {cfg.num_params() / 1e9:.2f}B",
         "vocab": cfg.vocab_size, "global_batch": config.global_batch_size, "seq_len": config.seq_len,
         "micro_batches": config.micro_batches, "remat": cfg.remat,
         "remat_policy": cfg.remat_policy if cfg.remat else None, "scan_layers": cfg.scan_layers,
         "precision": config.precision, "attention_impl": cfg.attention_impl}
  with jax.set_mesh(mesh):
    rec["attention"] = resolve_attention_impl(cfg.attention_impl, cfg.dtype)
  t0 = time.time()
  try:
    prog, compiled = compile_step(config, cfg, mesh, schedule_steps)
  except Exception as e:  # noqa: BLE001 - the TPU compiler reports out-of-memory as an error
    msg = str(e)
    if "RESOURCE_EXHAUSTED" not in msg and "Ran out of memory" not in msg:
      raise
    rec.update(compile_s=round(time.time() - t0, 1), fits=False, error=msg.splitlines()[0][:300])
    m = _OOM.search(msg)
    if m:
      scale = {"G": 2**30, "M": 2**20, "K": 2**10}
      rec["temp_gb"] = round(float(m.group(1)) * scale[m.group(2)] / GB, 2)
      hbm = float(m.group(3)) * scale[m.group(4)]
      hbm_src = "compiler"
    rec.update(hbm_gb=None if hbm is None else round(hbm / GB, 2), hbm_source=hbm_src)
    return rec
  ma = compiled.memory_analysis()
  args, temp = ma.argument_size_in_bytes, ma.temp_size_in_bytes
  out_extra = ma.output_size_in_bytes - ma.alias_size_in_bytes  # outputs not written in place of donated args
  total = program_bytes(ma)
  state = state_bytes(prog.abstract_params) + state_bytes(prog.abstract_opt)
  rec.update(argument_gb=round(args / GB, 3), temp_gb=round(temp / GB, 3), output_extra_gb=round(out_extra / GB, 3))
  extra, total = prog.objective.memory_report(config, prog, mesh, total, GB)  # e.g. DPO's reference in memory
  rec.update(extra)
  rec.update(compile_s=round(time.time() - t0, 1), total_gb=round(total / GB, 3),
             state_gb_per_device_ideal=round(state / mesh.size / GB, 3),
             hbm_gb=None if hbm is None else round(hbm / GB, 2), hbm_source=hbm_src,
             fits=None if hbm is None else bool(total <= hbm))
  return rec


def hint(rec: dict) -> str:
  """What to change when a step does not fit."""
  tips = []
  if rec.get("global_batch", 1) // max(rec.get("micro_batches", 1), 1) > rec.get("devices", 1):
    tips.append(f"--config.micro_batches={rec['micro_batches'] * 2} (activations scale with the micro-batch)")
  if not rec.get("remat"):
    tips.append("--config.model.remat=true (recompute layers in the backward pass)")
  tips.append("a larger slice (more chips share parameters and optimizer state)")
  return "does not fit: try " + "; or ".join(tips)


def dumps(rec: dict) -> str:
  return json.dumps(rec, sort_keys=False)


def versions() -> dict:
  out = {"jax": jax.__version__}
  try:
    from importlib.metadata import version
    out["libtpu"] = version("libtpu")
  except Exception:  # noqa: BLE001 - not installed
    out["libtpu"] = None
  return out
