"""The Colab notebook runs headless (nbclient) against a small checkpoint and a demo-shaped data folder; its
install step keeps the runtime's jax / jaxlib / numpy (a plan on a pretend runtime; slow: a fresh venv)."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import jax
import nbformat
import numpy as np
import pytest

from slm_jax import sharding
from slm_jax.eval.scoring import pair_outcomes
from test_eval_helpers import speech_checkpoint, torch_logprobs, write_gold, write_units
from xla_env import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB = os.path.join(ROOT, "tools", "evaluate_colab.ipynb")


def _load_tool(name):
  """A tools/ script as a module (tools/ is not a package; the library never imports it)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


notebook = _load_tool("make_notebook")
colab_install = _load_tool("colab_install")


def test_committed_notebook_is_the_built_one():
  with open(NB) as f:
    assert nbformat.read(f, as_version=4) == notebook.build()


def _demo_like(root, rng):
  """The layout of data/demo/eval: swuggy/{gold.csv, units.jsonl}, tsc/units.jsonl, cm_tsc/{text/, units.jsonl}."""
  rows, sw = [], {}
  for i in range(4):
    for voice in ("a", "b"):
      for correct in (1, 0):
        stem = f"sw{i}{voice}{correct}"
        rows.append(f"{stem},{i},{voice},{[0, 2, 30, 300][i]},w,p,2,{correct}")
        sw[stem] = rng.randint(0, 500, rng.randint(3, 9))
  write_gold(os.path.join(root, "swuggy", "gold.csv"), "filename,id,voice,frequency,word,phones,length,correct", rows)
  write_units(os.path.join(root, "swuggy", "units.jsonl"), sw)
  os.makedirs(os.path.join(root, "tsc"))
  write_units(os.path.join(root, "tsc", "units.jsonl"),
              {f"{i}_s{i}_{k}": rng.randint(0, 500, 12) for i in range(3) for k in ("correct", "incorrect")})
  os.makedirs(os.path.join(root, "cm_tsc", "text"))
  cm = {}
  for i in range(2):
    for part, text in (("mutual", "the cat sat on the mat ."), ("correct", "she was happy ."),
                       ("incorrect", "it rained .")):
      with open(os.path.join(root, "cm_tsc", "text", f"{i}_c{i}_{part}.txt"), "w") as f:
        f.write(text + "\n")
      cm[f"{i}_c{i}_{part}"] = rng.randint(0, 500, 6)
  write_units(os.path.join(root, "cm_tsc", "units.jsonl"), cm)
  return sw


def test_notebook_runs_headless(tmp_path, monkeypatch):
  from nbclient import NotebookClient
  mesh = sharding.make_mesh(fsdp=1, devices=jax.devices()[:1])
  _, layout, tm, _, _ = speech_checkpoint(str(tmp_path / "ckpt"), mesh)
  sw = _demo_like(str(tmp_path / "eval"), np.random.RandomState(0))
  env = {"SLM_JAX_CKPT": str(tmp_path / "ckpt"), "SLM_JAX_EVAL_DATA": str(tmp_path / "eval"),
         "SLM_JAX_BENCHMARKS": "swuggy,sblimp,tsc,cm_tsc", "SLM_JAX_RESULTS": str(tmp_path / "results.json"),
         "SLM_JAX_MAX_BUCKETS": "1", "SLM_JAX_MAX_NEW_TOKENS": "8",
         "XLA_FLAGS": xla_flags(1), "JAX_PLATFORMS": "cpu"}
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  with open(NB) as f:
    nb = nbformat.read(f, as_version=4)
  NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

  res = json.loads((tmp_path / "results.json").read_text())
  assert list(res) == ["swuggy", "tsc", "cm_tsc"]  # sblimp has no folder: skipped
  assert res["tsc"]["num_pairs"] == 3 and res["tsc"]["data"]["layout"] == "named"
  assert res["cm_tsc"]["num_pairs"] == 8 and sorted(res["cm_tsc"]["breakdowns"]["by_mode"]) == ["ss", "st", "ts", "tt"]
  # sWUGGY accuracy equals the official arithmetic on transformers' scores
  score = {s: torch_logprobs(tm, np.concatenate([[layout.bos_id], u + layout.unit_offset])).mean() for s, u in sw.items()}
  per_id = [np.mean(pair_outcomes([score[f"sw{i}{v}1"] for v in "ab"], [score[f"sw{i}{v}0"] for v in "ab"]))
            for i in range(4)]
  assert res["swuggy"]["accuracy"] == pytest.approx(np.mean(per_id))

  outputs = {c["id"]: c.get("outputs", []) for c in nb.cells if c["cell_type"] == "code"}
  text = lambda cid: "".join(o.get("text", "") for o in outputs[cid])  # noqa: E731
  assert text("cell-04").startswith(f"jax {jax.__version__} on cpu: [CpuDevice(id=0)]")
  assert "sblimp: no folder" in text("cell-10")
  assert any("text/markdown" in o.get("data", {}) and "| sWUGGY | 8 |" in o["data"]["text/markdown"]
             for o in outputs["cell-12"])
  assert any("image/png" in o.get("data", {}) for o in outputs["cell-14"])
  gen = text("cell-16")
  units = json.loads(gen.split("speech continuation units:")[1].splitlines()[0])
  assert len(units) == 8 and all(0 <= u < 500 for u in units)
  assert "text continuation:" in gen


def _setup_requirements():
  seen = {}
  import setuptools
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(setuptools, "setup", lambda **kw: seen.update(kw))
    mp.chdir(ROOT)
    import runpy
    runpy.run_path(os.path.join(ROOT, "setup.py"))
  return seen["install_requires"] + [f"{r}; extra == '{e}'" for e, rs in seen["extras_require"].items() for r in rs]


def test_install_plan_keeps_the_runtime_jax():
  """A Colab-like runtime: jax/jaxlib 0.10.1 (a GPU build, say), numpy 2.0.2, an old transformers, no flax. The
  plan installs what is missing or out of range, holds jax/jaxlib/numpy at their versions, and only reports a
  runtime numpy outside the range instead of replacing it; extras' requirements (torch) are left out."""
  reqs = _setup_requirements()
  runtime = {"jax": "0.10.1", "jaxlib": "0.10.1", "numpy": "2.0.2", "transformers": "4.57.1", "scipy": "1.16.3"}
  todo, hold, notes = colab_install.plan(reqs, runtime.get)
  names = {t.split(">")[0].split("<")[0].split("=")[0] for t in todo}
  assert {"flax", "transformers", "orbax-checkpoint"} <= names and not names & {"jax", "jaxlib", "numpy", "scipy"}
  assert "torch" not in names and not any("cuda" in t or "tpu" in t for t in todo)
  assert sorted(hold) == ["jax==0.10.1", "jaxlib==0.10.1", "numpy==2.0.2"]
  assert "transformers: 4.57.1 -> <6,>=5.0" in notes
  todo, hold, notes = colab_install.plan(reqs, {**runtime, "numpy": "1.26.4"}.get)
  assert "numpy==1.26.4" in hold and not any(t.startswith("numpy") for t in todo)
  assert any(n.startswith("numpy 1.26.4 is outside") for n in notes)
  todo, hold, _ = colab_install.plan(reqs, {}.get)  # a bare venv: everything, jax included, nothing held
  assert hold == [] and {"jax", "numpy"} <= {t.split(">")[0].split("<")[0] for t in todo}


@pytest.mark.slow
def test_notebook_in_a_fresh_venv_keeps_its_jax(tmp_path, monkeypatch):
  """A fresh venv with jax/jaxlib 0.10.1 (the lock has 0.10.2) and ipykernel; the notebook, opened inside this
  checkout, installs slm_jax there (tools/colab_install.py), runs the metrics, and jax, jaxlib and numpy are the
  versions they were before."""
  from nbclient import NotebookClient
  t0 = time.time()
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
  py = str(venv / "bin" / "python")
  subprocess.run([py, "-m", "pip", "install", "-q", "jax==0.10.1", "jaxlib==0.10.1", "ipykernel"], check=True)
  versions = lambda: subprocess.run(  # noqa: E731
      [py, "-c", "import importlib.metadata as m; print([m.version(p) for p in ('jax', 'jaxlib', 'numpy')])"],
      capture_output=True, text=True, check=True).stdout
  before = versions()
  assert "0.10.1" in before
  kernels = tmp_path / "jupyter" / "kernels" / "fresh"
  kernels.mkdir(parents=True)
  (kernels / "kernel.json").write_text(json.dumps({"argv": [py, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                                   "display_name": "fresh venv", "language": "python"}))
  mesh = sharding.make_mesh(fsdp=1, devices=jax.devices()[:1])
  speech_checkpoint(str(tmp_path / "ckpt"), mesh)
  _demo_like(str(tmp_path / "eval"), np.random.RandomState(0))
  env = {"JUPYTER_PATH": str(tmp_path / "jupyter"), "SLM_JAX_CKPT": str(tmp_path / "ckpt"),
         "SLM_JAX_EVAL_DATA": str(tmp_path / "eval"), "SLM_JAX_BENCHMARKS": "swuggy,tsc",
         "SLM_JAX_RESULTS": str(tmp_path / "results.json"), "SLM_JAX_MAX_BUCKETS": "1", "SLM_JAX_MAX_NEW_TOKENS": "4",
         "XLA_FLAGS": xla_flags(1), "JAX_PLATFORMS": "cpu"}
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  with open(NB) as f:
    nb = nbformat.read(f, as_version=4)
  t1 = time.time()
  NotebookClient(nb, timeout=900, kernel_name="fresh", resources={"metadata": {"path": os.path.join(ROOT, "tools")}}
                 ).execute()
  print(f"venv {t1 - t0:.0f}s, notebook (install + run) {time.time() - t1:.0f}s")
  assert versions() == before
  install_out = "".join(o.get("text", "") for o in nb.cells[4].get("outputs", []))
  assert "[install] flax: not installed" in install_out and "jax 0.10.1 on cpu" in install_out
  res = json.loads((tmp_path / "results.json").read_text())
  assert sorted(res) == ["swuggy", "tsc"] and res["tsc"]["num_pairs"] == 3


@pytest.mark.parametrize("where", ["tools/launch", "outside"])
def test_notebook_finds_checkout_and_demo_data(where, tmp_path, monkeypatch, capsys):
  """Settings + install cells, then the locating part of the load cell, run from a folder inside the checkout
  (found by walking up) and from one outside it (found from the installed package, an editable install here)."""
  for k in ("SLM_JAX_EVAL_DATA", "SLM_JAX_REPO"):
    monkeypatch.delenv(k, raising=False)
  monkeypatch.setenv("SLM_JAX_CKPT", str(tmp_path))
  monkeypatch.chdir(os.path.join(ROOT, where) if where != "outside" else tmp_path)
  ns = {}
  exec(notebook.PARAMS, ns)
  exec(notebook.INSTALL, ns)
  exec(notebook.LOAD.split("mesh = run.make_mesh()")[0], ns)
  assert ns["CHECKOUT"] == (ROOT if where != "outside" else None)
  assert ns["DATA_DIR"] == os.path.join(ROOT, "data", "demo", "eval") and ns["CKPT"] == str(tmp_path)
  assert f"jax {jax.__version__} on cpu" in capsys.readouterr().out
