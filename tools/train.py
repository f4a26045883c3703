"""Train an interleaved speech-text LM: `tools/train.py --config=configs/NAME.py[:variant] --workdir=DIR`.

Overrides: `--config.total_steps=40 --config.checkpoint_every=10 --config.log_every=1 ...`. Rerunning the same
command resumes from the latest checkpoint in DIR/checkpoints. Multi-host: started once per host (SLURM, TPU
slice) or with --coordinator_address/--num_processes/--process_id; see tools/launch/.
"""
import json
import sys

from absl import app, flags
from ml_collections import config_flags

from slm_jax import console

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints/, metrics.jsonl, tb/, config.json.")
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                                 "jax.distributed.initialize: auto = when SLURM / TPU slice / coordinator says so.")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host without SLURM).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
_PID = flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
flags.mark_flags_as_required(["config", "workdir"])


def _fail(error: Exception, code: int) -> None:
  print(f"ERROR: {error}", file=sys.stderr, flush=True)
  sys.exit(code)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.setup()  # absl / Orbax / JAX INFO hidden unless --verbosity is given
  from slm_jax.train import distributed, trainer, validate
  # everything that needs no device count is checked before jax.distributed or any backend starts;
  # trainer.train checks the rest (mesh -1 axes on the real device count) before it builds anything
  problems = validate.problems(_CONFIG.value, _WORKDIR.value)
  if problems:
    _fail(validate.ConfigError(problems), 2)
  distributed.initialize(_DISTRIBUTED.value, _COORD.value, _NPROC.value, _PID.value)
  try:
    summary = trainer.train(_CONFIG.value, _WORKDIR.value)
  except (validate.ConfigError, trainer.WorkdirLocked, trainer.NoRestorableCheckpoint) as e:
    _fail(e, 2)
  except trainer.NonFiniteError as e:
    _fail(e, 3)
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  app.run(main)
