"""What the tools show: quiet logs (`setup`, called first in every tool's main) and progress bars for long steps.

Bars (tqdm, on stderr, with rate and ETA) are on by default; `--progress=false` (any tool) or SLM_JAX_PROGRESS=0
turns them off. When stderr is not a terminal (a log file, CI) a bar redraws at most every 30 s, so it adds a
few lines, not thousands.
"""
from __future__ import annotations

import logging as py_logging
import os
import sys

from absl import flags, logging
from tqdm import tqdm

from slm_jax import hostmem

_PROGRESS = flags.DEFINE_bool("progress", True, "Progress bars with ETA on stderr for long steps "
                              "(at most one redraw per 30 s when stderr is not a terminal).")
# INFO noise of libraries, at WARNING whatever --verbosity says (the messages are about backends we do not use)
_NOISY = ("jax._src.xla_bridge",)
# expected warnings: reading only the params / meta items of a training checkpoint (export, evaluation)
_EXPECTED = ("was found in the checkpoint, but could not be restored",)


class _DropExpected(py_logging.Filter):
  def filter(self, record: py_logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in _EXPECTED)


def setup() -> None:
  """absl, Orbax and JAX INFO hidden unless --verbosity was given (absl's default under app.run is INFO); host
  malloc tuned for XLA:CPU's step buffers (`hostmem.tune_allocator`)."""
  hostmem.tune_allocator()
  if flags.FLAGS.is_parsed() and not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  for name in _NOISY:  # "Unable to initialize backend 'tpu'" and friends
    py_logging.getLogger(name).setLevel(py_logging.WARNING)
  absl_logger = py_logging.getLogger("absl")  # Orbax logs through absl
  if not any(isinstance(f, _DropExpected) for f in absl_logger.filters):
    absl_logger.addFilter(_DropExpected())


def progress_enabled() -> bool:
  env = os.environ.get("SLM_JAX_PROGRESS")
  if env is not None:
    return env.lower() not in ("0", "false", "no")
  return _PROGRESS.value if flags.FLAGS.is_parsed() else True


def bar(iterable=None, *, total: int | None = None, desc: str | None = None, unit: str = "it"):
  """A tqdm bar on stderr (disabled per `progress_enabled`); use as an iterable wrapper or `with bar(...) as b`."""
  tty = sys.stderr.isatty()
  return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=not progress_enabled(),
              mininterval=0.2 if tty else 30.0, dynamic_ncols=tty, leave=True)
