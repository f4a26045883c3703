"""Writes tools/evaluate_colab.ipynb (nbformat): install, load a checkpoint, run the metrics, table, plot, generate.

  python tools/make_notebook.py [out.ipynb]

Every setting sits in the first code cell and can be overridden by an environment variable (SLM_JAX_*), which is
how the tests run it headless against a small checkpoint.
"""
from __future__ import annotations

import os
import sys

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "evaluate_colab.ipynb")

INTRO = """# slm_jax: evaluate a speech-text LM (SIMS metrics)

Runs the speech metrics of the SIMS paper (sWUGGY, sBLIMP, spoken / topic StoryCloze and cross-modal StoryCloze)
on a checkpoint of ours (Orbax) or a Hugging Face / slamkit folder, shows a table and a plot, and generates a
continuation. By default it uses the small look-alike sets bundled in `data/demo/eval` (stand-in units, NOT the
real benchmarks) and the demo run's checkpoint (`bash tools/launch/demo.sh` writes `runs/demo/checkpoints`).
Point `DATA_DIR` at the real ZeroSpeech / StoryCloze folders with their units files to get comparable numbers.

Works in Colab (pick a GPU or TPU runtime first: the runtime's own jax, jaxlib and numpy are kept) and in a local
Jupyter opened anywhere inside a checkout of the repository."""

PARAMS = """import os
# Settings: edit here, or set the environment variables (the tests do). Empty values are found by the notebook.
REPO_URL = os.environ.get("SLM_JAX_REPO", "")         # git URL of YOUR copy of slm_jax (there is no public one);
                                                      # only used on Colab when not opened inside a checkout
CKPT = os.environ.get("SLM_JAX_CKPT", "")             # Orbax dir or HF folder; "" = <checkout>/runs/demo/checkpoints
DATA_DIR = os.environ.get("SLM_JAX_EVAL_DATA", "")    # one subfolder per benchmark; "" = <checkout>/data/demo/eval
USE_DRIVE = os.environ.get("SLM_JAX_DRIVE", "0") == "1"  # Colab: mount Google Drive (CKPT="/content/drive/MyDrive/...")
BENCHMARKS = os.environ.get("SLM_JAX_BENCHMARKS", "swuggy,sblimp,ssc,tsc,cm_tsc").split(",")
RESULTS = os.environ.get("SLM_JAX_RESULTS", "eval_results.json")
MAX_BUCKETS = int(os.environ.get("SLM_JAX_MAX_BUCKETS", "4"))
MAX_NEW_TOKENS = int(os.environ.get("SLM_JAX_MAX_NEW_TOKENS", "150"))
PROMPT_TEXT = os.environ.get("SLM_JAX_PROMPT_TEXT", "the cat sat on the mat")
VOCODER_DIR = os.environ.get("SLM_JAX_VOCODER", "")    # converted unit vocoder (tools/convert_vocoder.py): hear it"""

INSTALL = """import importlib, importlib.util, subprocess, sys
IN_COLAB = "google.colab" in sys.modules


def find_checkout(start):
  \"\"\"The slm_jax checkout holding `start` (or one of its parents), or None.\"\"\"
  d = os.path.abspath(start)
  while not (os.path.isfile(os.path.join(d, "setup.py")) and os.path.isfile(os.path.join(d, "slm_jax", "__init__.py"))):
    if os.path.dirname(d) == d:
      return None
    d = os.path.dirname(d)
  return d


CHECKOUT = find_checkout(os.getcwd())
if CHECKOUT is None and IN_COLAB:
  CHECKOUT = "/content/slm_jax"
  if not os.path.isdir(CHECKOUT):
    if not REPO_URL:
      raise ValueError("set REPO_URL to the git URL of your copy of slm_jax, or open this notebook inside a checkout")
    subprocess.run(["git", "clone", "--depth=1", REPO_URL, CHECKOUT], check=True)
if importlib.util.find_spec("slm_jax") is None:
  if CHECKOUT is None:
    raise RuntimeError("slm_jax is not installed and this notebook is not inside a checkout of it")
  # the package and only its missing requirements; the runtime's jax, jaxlib and numpy stay as they are
  r = subprocess.run([sys.executable, os.path.join(CHECKOUT, "tools", "colab_install.py"), CHECKOUT],
                     capture_output=True, text=True)
  print(r.stdout, r.stderr[-3000:], sep="")
  r.check_returncode()
  importlib.invalidate_caches()
import jax
print(f"jax {jax.__version__} on {jax.default_backend()}: {jax.devices()}")  # uses whatever accelerator is there"""

DRIVE = """if USE_DRIVE and IN_COLAB:
  from google.colab import drive
  drive.mount("/content/drive")
elif USE_DRIVE:
  print("USE_DRIVE: not in Colab, nothing to mount")"""

LOAD = """import slm_jax
from slm_jax.eval import run
from slm_jax.eval.loading import load_checkpoint
from slm_jax.eval.scoring import Scorer

roots = [r for r in (CHECKOUT, os.path.dirname(os.path.dirname(os.path.abspath(slm_jax.__file__)))) if r]
first_dir = lambda paths: next((p for p in paths if os.path.isdir(p)), None)
DATA_DIR = DATA_DIR or first_dir(os.path.join(r, "data", "demo", "eval") for r in roots)
CKPT = CKPT or first_dir(os.path.join(r, "runs", "demo", "checkpoints") for r in roots)
if not CKPT or not DATA_DIR:
  raise ValueError(f"set CKPT (found {CKPT}) and DATA_DIR (found {DATA_DIR}); `bash tools/launch/demo.sh` makes "
                   "runs/demo/checkpoints")
print(f"checkpoint: {CKPT}\\ndata: {DATA_DIR}")
mesh = run.make_mesh()                      # all devices on the 'fsdp' axis; the batch is sharded over them
loaded = load_checkpoint(CKPT, mesh)
cfg = loaded.model.cfg
print(loaded.info)
print(f"{cfg.arch}: {cfg.num_params() / 1e6:.1f}M parameters, vocabulary {cfg.vocab_size}")"""

METRICS = """import time
scorer = Scorer(loaded.model, mesh, max_buckets=MAX_BUCKETS)
results = {}
for name in BENCHMARKS:
  folder = os.path.join(DATA_DIR, name)
  if not os.path.isdir(folder):
    print(f"{name}: no folder {folder}, skipped")
    continue
  t = time.time()
  results[name] = run.evaluate_loaded(loaded, mesh, name, folder, units=run.units_source(folder), scorer=scorer)
  r = results[name]
  print(f"{r['metric']:>16}: {100 * r['accuracy']:5.1f}%  ({r['num_pairs']} pairs, {time.time() - t:.1f}s)")
run.write_json(RESULTS, results)"""

TABLE = """from IPython.display import Markdown, display
lines = ["| metric | pairs | accuracy (%) | breakdown |", "| --- | --- | --- | --- |"]
for r in results.values():
  b = r["breakdowns"]
  parts = [f"{k}: {100 * v['score']:.1f}" for key in ("by_frequency", "by_type", "by_mode", "by_speaker")
           for k, v in b.get(key, {}).items() if v.get("score") is not None]
  lines.append(f"| {r['metric']} | {r['num_pairs']} | {100 * r['accuracy']:.1f} | {', '.join(parts)} |")
display(Markdown("\\n".join(lines)))"""

PLOT = """import matplotlib.pyplot as plt
SIMS_7B = {"sWUGGY": 75.4, "sBLIMP": 59.8, "sSC": 66.7, "tSC": 88.3}  # published (docs/reference.md §7), real benchmarks
names = [r["metric"] for r in results.values()]
ours = [100 * r["accuracy"] for r in results.values()]
fig, ax = plt.subplots(figsize=(1.6 * max(len(names), 3), 3.5))
ax.bar(names, ours, color="tab:blue", label="this checkpoint")
ref = [(i, SIMS_7B[n]) for i, n in enumerate(names) if n in SIMS_7B]
if ref:
  ax.scatter([i for i, _ in ref], [v for _, v in ref], marker="_", s=900, color="tab:red", label="SIMS-7B (paper)")
ax.axhline(50, color="gray", linestyle=":", label="chance")
ax.set_ylabel("accuracy (%)"); ax.set_ylim(0, 100); ax.legend(loc="lower right"); plt.xticks(rotation=20)
plt.tight_layout(); plt.show()"""

GENERATE = """import json
from slm_jax.eval.generate import SamplingConfig
sc = SamplingConfig(max_new_tokens=MAX_NEW_TOKENS, temperature=0.8, top_k=25)  # SIMS settings
# a speech prompt: the first 3 s of the first item of a units file among the benchmark folders
units_files = [run.find_units(os.path.join(DATA_DIR, n)) for n in BENCHMARKS if os.path.isdir(os.path.join(DATA_DIR, n))]
units_files = [u for u in units_files if u]
if units_files:
  with open(units_files[0]) as f:
    rec = json.loads(f.readline())
  prompt = {"name": os.path.splitext(os.path.basename(rec["file_name"]))[0], "units": rec["units"],
            "duration": rec.get("duration")}
  out, stats = run.generate_loaded(loaded, mesh, [prompt], prompt_modality="speech", sampling=sc, prompt_seconds=3.0)
  print("speech prompt units:", out[0]["prompt"])
  print("speech continuation units:", out[0]["units"])
  print(f"{stats['tokens_per_s']:.0f} tokens/s (first call includes compilation)")
out, _ = run.generate_loaded(loaded, mesh, [{"name": "text", "text": PROMPT_TEXT}], prompt_modality="text",
                             sampling=sc)
print("text prompt:", PROMPT_TEXT)
print("text continuation:", out[0]["text"])"""


HEAR = """if VOCODER_DIR and units_files:
  from IPython.display import Audio, display
  from slm_jax.vocoder import Vocoder
  speech, _ = run.generate_loaded(loaded, mesh, [prompt], prompt_modality="speech", sampling=sc, prompt_seconds=3.0)
  voc = Vocoder.load(VOCODER_DIR)
  display(Audio(voc([speech[0]["prompt"] + speech[0]["units"]])[0], rate=voc.sample_rate))  # prompt, then continuation
else:
  print("set VOCODER_DIR (a folder written by tools/convert_vocoder.py) to hear a speech continuation")"""


def build():
  import nbformat
  from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
  cells = [new_markdown_cell(INTRO),
           new_markdown_cell("## Settings"), new_code_cell(PARAMS, metadata={"tags": ["parameters"]}),
           new_markdown_cell("## Install (when needed) and accelerator"), new_code_cell(INSTALL),
           new_markdown_cell("## Google Drive (optional, Colab)"), new_code_cell(DRIVE),
           new_markdown_cell("## Load the checkpoint"), new_code_cell(LOAD),
           new_markdown_cell("## Metrics"), new_code_cell(METRICS),
           new_markdown_cell("## Results table"), new_code_cell(TABLE),
           new_markdown_cell("## Plot"), new_code_cell(PLOT),
           new_markdown_cell("## Generate a continuation (KV-cache sampling, other modality banned)"),
           new_code_cell(GENERATE),
           new_markdown_cell("## Hear the speech continuation (unit vocoder)"), new_code_cell(HEAR)]
  for i, cell in enumerate(cells):
    cell["id"] = f"cell-{i:02d}"  # stable ids: rebuilding gives the same file
  nb = new_notebook(cells=cells, metadata={
      "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
      "language_info": {"name": "python"}, "accelerator": "GPU", "colab": {"provenance": []}})
  nbformat.validate(nb)
  return nb


def write(path: str = PATH) -> str:
  import nbformat
  nbformat.write(build(), path)
  return os.path.abspath(path)


if __name__ == "__main__":
  print(write(*sys.argv[1:]))
