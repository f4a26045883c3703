"""Packaging: setup.py's ranges hold for the pinned (tested) versions and for a GPU node's own jax; the lock pins
every dependency; torch is test-only; the console scripts run the tools."""
import os
import re
import runpy
import subprocess
import sys

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup_kwargs(monkeypatch_module):
  seen = {}
  monkeypatch_module.setattr(setuptools, "setup", lambda **kw: seen.update(kw))
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    runpy.run_path(os.path.join(ROOT, "setup.py"), run_name="__main__")
  finally:
    os.chdir(cwd)
  return seen


@pytest.fixture(scope="module")
def monkeypatch_module():
  with pytest.MonkeyPatch.context() as mp:
    yield mp


def _lock():
  pins = {}
  with open(os.path.join(ROOT, "requirements.lock")) as f:
    for line in f:
      line = line.split("#")[0].strip()
      if line:
        name, version = line.split("==")
        pins[canonicalize_name(name)] = version
  return pins


def test_lock_pins_every_dependency_within_the_ranges(setup_kwargs):
  pins = _lock()
  extras = setup_kwargs["extras_require"]
  reqs = [Requirement(r) for r in setup_kwargs["install_requires"] + extras["test"] + extras["asr"]]
  for r in reqs:
    name = canonicalize_name(r.name)
    assert name in pins, f"requirements.lock has no pin for {r.name}"
    assert r.specifier.contains(pins[name], prereleases=True), f"lock {name}=={pins[name]} is outside {r}"
  assert not any(canonicalize_name(n) == "slm-jax" for n in pins)
  assert pins["libtpu"] == "0.0.42.1"  # what `[tpu]` brings with the locked jax (the AOT tests' TPU topologies)


def test_ranges_accept_other_runtimes(setup_kwargs):
  """The lent GPU nodes' preinstalled stack (BENCHMARKS.md: jax 0.11.2, flax 0.12.10) and a neighbouring jax patch
  release (what the notebook test installs first) satisfy the ranges; jax 0.9 and numpy 1.x do not."""
  req = {canonicalize_name(Requirement(r).name): Requirement(r) for r in setup_kwargs["install_requires"]}
  for name, version, ok in [("jax", "0.11.2", True), ("jaxlib", "0.11.2", True), ("flax", "0.12.10", True),
                            ("jax", "0.10.1", True), ("jax", "0.9.2", False), ("numpy", "1.26.4", False),
                            ("numpy", "2.0.2", True)]:
    assert req[name].specifier.contains(version) is ok, (name, version)
  assert all(str(Requirement(r).specifier) for r in setup_kwargs["install_requires"])  # a range for each
  assert not any(re.search(r"==", r) for r in setup_kwargs["install_requires"])


def test_extras(setup_kwargs):
  extras = setup_kwargs["extras_require"]
  names = lambda rs: {canonicalize_name(Requirement(r).name) for r in rs}  # noqa: E731
  assert "torch" in names(extras["test"]) and "torch" not in names(setup_kwargs["install_requires"])
  for extra, want in (("gpu", "cuda12"), ("tpu", "tpu")):
    (r,) = [Requirement(x) for x in extras[extra]]
    assert r.name == "jax" and r.extras == {want} and r.specifier.contains(_lock()["jax"])
  assert names(extras["asr"]) == {"faster-whisper"}
  assert os.path.exists(os.path.join(ROOT, "LICENSE")) and setup_kwargs["license"] == "Apache-2.0"


def test_console_scripts_are_the_tools(setup_kwargs):
  from slm_jax import cli
  scripts = dict(s.replace(" ", "").split("=") for s in setup_kwargs["entry_points"]["console_scripts"])
  assert {"slm-train", "slm-evaluate", "slm-generate", "slm-prepare-data"} <= set(scripts)
  for script, target in scripts.items():
    tool = target.split(":")[1]
    assert target == f"slm_jax.cli:{tool}" and callable(getattr(cli, tool)) and script == "slm-" + tool.replace("_", "-")
    assert os.path.exists(os.path.join(ROOT, "tools", tool + ".py")), script
  assert setup_kwargs["package_dir"] == {"slm_jax_tools": "tools"}


def test_console_script_runs_the_tool():
  """The installed `slm-inspect-data` prints the same help as `python tools/inspect_data.py` (flags included)."""
  exe = os.path.join(os.path.dirname(sys.executable), "slm-inspect-data")
  if not os.path.exists(exe):
    pytest.skip("console scripts not installed (run tools/setup_env.sh)")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  via_script = subprocess.run([exe, "--helpshort"], capture_output=True, text=True, env=env, cwd="/")
  via_tool = subprocess.run([sys.executable, "tools/inspect_data.py", "--helpshort"], capture_output=True, text=True,
                            env=env, cwd=ROOT)
  assert via_script.returncode == via_tool.returncode, via_script.stderr[-2000:]  # absl: 1 after printing help
  assert "--data_dir" in via_script.stdout
  flags = lambda out: sorted(re.findall(r"--\[?(?:no)?\]?(\w+)", out))  # noqa: E731
  assert flags(via_script.stdout) == flags(via_tool.stdout)
