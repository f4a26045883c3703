"""Compile a config's training step for a topology on this (CPU) machine, before renting it.

  python tools/aot_compile.py --config=configs/sims_llama3_2_3b.py --topology=v5e:2x4
  python tools/aot_compile.py --config=configs/sims_qwen2_5.py:7b --cpu_devices=8 --hbm_gb=80   # a GPU node

The step is the one tools/train.py runs for the config (train/program.build_program: mesh, shardings, optimizer,
micro-batches, remat), lowered with abstract parameters and batch: no weights, no data. The model comes from
the config's preset, or from --config.init.path: a HF folder's config.json or an Orbax checkpoint's metadata.
Prints one JSON line (per-device argument / temporary / total GB, device memory, fits, compile time; a DPO run
with the reference model in memory adds that model's params and the peak of its forward to the total); exits 1
when the step does not fit, with a hint on stderr. TPU topologies need libtpu (`pip install -e .[tpu]`); v4 names count TensorCores
(v4:2x2x1 is 4 chips, 8 devices).
"""
import os
import re
import sys

# before jax starts a backend: the host side is always the CPU (no TPU/GPU probing), with N simulated devices
os.environ["JAX_PLATFORMS"] = "cpu"
_N = [m.group(1) for a in sys.argv for m in [re.match(r"--cpu_devices=(\d+)$", a)] if m]
if _N:
  _flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
  os.environ["XLA_FLAGS"] = f"{_flags} --xla_force_host_platform_device_count={_N[-1]}".strip()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from slm_jax import console  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:variant]).",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU topology, e.g. v5e:2x4, v5e:4x4, v5p:2x2x1, v4:2x2x1.")
_CPU = flags.DEFINE_integer("cpu_devices", None, "Compile for N simulated host devices (a GPU node stand-in).")
_HBM = flags.DEFINE_float("hbm_gb", None, "Device memory in GB (default: the TPU's HBM); give it with "
                          "--cpu_devices, e.g. 40 or 80 for A100s, to get a fits verdict.")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if (_TOPOLOGY.value is None) == (_CPU.value is None):
    raise app.UsageError("give exactly one of --topology or --cpu_devices")
  console.setup()  # absl / Orbax / JAX INFO hidden unless --verbosity is given
  import jax
  jax.config.update("jax_platforms", "cpu")  # also when jax was imported before this file set the variable
  from slm_jax.train import aot
  from slm_jax.train.trainer import plan_steps

  config = _CONFIG.value
  if _TOPOLOGY.value:
    devices, target = aot.topology_devices(_TOPOLOGY.value), f"tpu {_TOPOLOGY.value}"
  else:
    devices, target = jax.devices()[:_CPU.value], f"cpu x{_CPU.value}"
    if len(devices) != _CPU.value:
      raise app.UsageError(f"--cpu_devices={_CPU.value} but jax has {len(devices)} devices")
  init_dir = aot.init_dir(config)
  if init_dir is None and config.init.kind == "orbax":
    print(f"WARNING: no Orbax checkpoint at config.init.path={config.init.path!r}: the model structure comes from "
          f"the preset {config.model.preset!r}, not from the checkpoint tools/train.py would start from",
          file=sys.stderr, flush=True)
  cfg = aot.model_config(config, init_dir)
  mesh = aot.mesh_for(config, devices)
  rec = aot.compile_report(config, cfg, mesh, target, schedule_steps=plan_steps(config)[1],
                           hbm_bytes=int(_HBM.value * 1e9) if _HBM.value else None)
  source = f"{config.init.kind} {init_dir}" if init_dir else f"preset {config.model.preset}"
  rec.update(aot.versions(), model_source=source, args=" ".join(sys.argv[1:]))
  print(aot.dumps(rec), flush=True)
  if rec["fits"] is False:
    print(aot.hint(rec), file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
