"""The Colab notebook runs headless (nbclient) against a small checkpoint and a demo-shaped data folder."""
import importlib.util
import json
import os

import jax
import nbformat
import numpy as np
import pytest

from slm_jax import sharding
from slm_jax.eval.scoring import pair_outcomes
from test_eval_helpers import speech_checkpoint, torch_logprobs, write_gold, write_units

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB = os.path.join(ROOT, "tools", "evaluate_colab.ipynb")


def _load_tool(name):
  """A tools/ script as a module (tools/ is not a package; the library never imports it)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


notebook = _load_tool("make_notebook")


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
         "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
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
  assert "sblimp: no folder" in text("cell-08")
  assert any("text/markdown" in o.get("data", {}) and "| sWUGGY | 8 |" in o["data"]["text/markdown"]
             for o in outputs["cell-10"])
  assert any("image/png" in o.get("data", {}) for o in outputs["cell-12"])
  gen = text("cell-14")
  units = json.loads(gen.split("speech continuation units:")[1].splitlines()[0])
  assert len(units) == 8 and all(0 <= u < 500 for u in units)
  assert "text continuation:" in gen
