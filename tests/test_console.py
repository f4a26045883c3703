"""Tools are quiet unless asked (`console.setup`), and long steps show a bar that `--progress=false` turns off."""
import os
import re
import subprocess
import sys

PROGRAM = """
import logging, time
from absl import app, logging as absl_logging
from slm_jax import console

def main(argv):
  console.setup()
  absl_logging.info("absl info line")
  logging.getLogger("orbax.checkpoint").info("orbax info line")
  logging.getLogger("jax._src.xla_bridge").info("Unable to initialize backend 'tpu'")
  absl_logging.warning("a warning stays")
  absl_logging.warning('Item "opt_state" was found in the checkpoint, but could not be restored. Please ...')
  for _ in console.bar(range(3), desc="work", unit="step"):
    time.sleep(0.01)

app.run(main)
"""


def _run(*args, env=None):
  p = subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True, timeout=120,
                     env=env)
  assert p.returncode == 0, p.stderr
  return p.stderr


def test_quiet_by_default_verbose_on_request():
  err = _run()
  assert "a warning stays" in err and "info line" not in err and "Unable to initialize" not in err
  assert "opt_state" not in err  # Orbax's warning when only params / meta of a training checkpoint are read
  assert re.search(r"work: 100%\|.*\| 3/3 \[", err)  # the bar, with its count and timing
  err = _run("--verbosity=0")
  assert "absl info line" in err and "orbax info line" in err
  assert "Unable to initialize" not in err  # backends we do not use, even at INFO


def test_progress_can_be_turned_off():
  assert "work:" not in _run("--progress=false")
  assert "work:" not in _run(env={**os.environ, "SLM_JAX_PROGRESS": "0"})
