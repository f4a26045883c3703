"""The layer contract of README "What is where", checked over the import graph (every import statement, function-local
ones included) of slm_jax/, tools/ and configs/.

An import may only point to its own or a lower layer; the packages of an `INDEPENDENT` layer do not import each
other, nor do the `APART` pairs; nothing imports the tests. A module that no entry of `LAYERS` covers fails too,
so each new module is placed.
SLM_JAX_LAYERS_ROOT=<folder> checks another tree (e.g. a scratch copy with a planted upward import).
"""
from __future__ import annotations

import ast
import os

LAYERS = (  # lowest first; a module belongs to the entry that is the longest prefix of its dotted name
    ("base", ("slm_jax", "slm_jax.vocab", "slm_jax.layout", "slm_jax.frames", "slm_jax.sharding", "slm_jax.jsonl",
              "slm_jax.console", "slm_jax.hostmem", "slm_jax.procs", "slm_jax.textmetrics", "slm_jax.assets")),
    ("model", ("slm_jax.model",)),
    ("io", ("slm_jax.checkpoint", "slm_jax.units", "slm_jax.data", "slm_jax.vocoder")),
    ("run", ("slm_jax.train", "slm_jax.eval")),
    ("apps", ("slm_jax.scaling", "slm_jax.demo", "slm_jax.testing")),
    ("entry", ("slm_jax.cli", "tools", "configs")),
)
EXACT = ("slm_jax",)  # entries that cover that module only (slm_jax/__init__.py), not what lies below it
INDEPENDENT = ("io", "run", "apps")  # siblings: e.g. eval never imports train, nor train eval
APART = (("slm_jax.eval", "slm_jax.data"),)  # also kept apart: evaluation reads its inputs itself (eval.inputs)
SOURCES = ("slm_jax", "tools", "configs")  # the folders checked (tools/ is installed as slm_jax_tools)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def module_names(root: str) -> dict[str, str]:
  """{dotted module name: path relative to root} of every .py under the SOURCES folders of root."""
  out = {}
  for top in SOURCES:
    for folder, dirs, files in os.walk(os.path.join(root, top)):
      dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
      for f in sorted(files):
        if f.endswith(".py"):
          rel = os.path.relpath(os.path.join(folder, f), root)
          parts = rel[:-3].split(os.sep)
          out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = rel
  return out


def layer_of(module: str) -> tuple[int, str, str] | None:
  """(layer index, layer name, owning entry) of a dotted module name, or None when no entry covers it."""
  best = None
  for i, (name, entries) in enumerate(LAYERS):
    for e in entries:
      covers = module == e or (e not in EXACT and module.startswith(e + "."))
      if covers and (best is None or len(e) > len(best[2])):
        best = (i, name, e)
  return best


def imports(tree: ast.AST, module: str, is_package: bool, known: set[str]):
  """(line, imported module) of every import in `tree`; `from A import n` names A.n when that is a module."""
  package = module.split(".") if is_package else module.split(".")[:-1]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        yield node.lineno, a.name
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
      for a in node.names:
        yield node.lineno, f"{base}.{a.name}" if f"{base}.{a.name}" in known else base


def violations(root: str) -> list[str]:
  """One line per broken rule under `root`: importer file:line, the two modules and their layers."""
  names = module_names(root)
  known = set(names)
  tests_dir = os.path.join(root, "tests")  # its modules are importable by their own names too (hf_tiny, ...)
  test_modules = {"tests"} | {f[:-3] for f in (os.listdir(tests_dir) if os.path.isdir(tests_dir) else ())
                              if f.endswith(".py")}
  out = []
  for module, rel in sorted(names.items()):
    mine = layer_of(module)
    if mine is None:
      out.append(f"{rel}: module {module} has no layer (add it to tests/test_layers.py LAYERS and README)")
      continue
    with open(os.path.join(root, rel), encoding="utf-8") as f:
      tree = ast.parse(f.read(), rel)
    for line, target in imports(tree, module, rel.endswith("__init__.py"), known):
      top = target.split(".")[0]
      if top in test_modules:
        out.append(f"{rel}:{line}: {module} imports {target} from the tests")
        continue
      if top == "slm_jax_tools":
        target = "tools" + target[len(top):]
      elif top not in SOURCES:
        continue  # a third-party or standard-library module
      theirs = layer_of(target)
      if theirs is None:
        out.append(f"{rel}:{line}: {module} imports {target}, which has no layer")
      elif theirs[0] > mine[0]:
        out.append(f"{rel}:{line}: upward import: {module} (layer {mine[0] + 1} {mine[1]}) imports {target} "
                   f"(layer {theirs[0] + 1} {theirs[1]})")
      elif (mine[2], theirs[2]) in APART:
        out.append(f"{rel}:{line}: {module} imports {target}: {mine[2]} does not import {theirs[2]} (APART)")
      elif theirs[0] == mine[0] and mine[1] in INDEPENDENT and theirs[2] != mine[2]:
        out.append(f"{rel}:{line}: sibling import: {module} ({mine[2]}) imports {target} ({theirs[2]}); "
                   f"the packages of layer {mine[0] + 1} {mine[1]} are independent")
  return out


def test_layer_contract():
  root = os.environ.get("SLM_JAX_LAYERS_ROOT", REPO)
  found = violations(root)
  assert not found, "layer contract (README \"What is where\") broken:\n" + "\n".join(found)


def test_layers_are_disjoint():
  entries = [e for _, es in LAYERS for e in es]
  assert len(entries) == len(set(entries))


def _write(root, rel: str, text: str = "") -> None:
  path = os.path.join(root, rel)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def test_checker_reports_planted_imports(tmp_path):
  """The checker itself: each kind of broken rule planted in a small tree is reported, the allowed imports are not."""
  for pkg in ("slm_jax", "slm_jax/model", "slm_jax/data", "slm_jax/units", "slm_jax/train", "slm_jax/eval",
              "slm_jax/checkpoint"):
    _write(tmp_path, f"{pkg}/__init__.py")
  _write(tmp_path, "slm_jax/vocab.py", "import re\n\n\ndef f():\n  from slm_jax.train import trainer\n")
  _write(tmp_path, "slm_jax/model/logprobs.py", "from slm_jax import vocab\nfrom slm_jax.model import transformer\n")
  _write(tmp_path, "slm_jax/model/transformer.py", "import slm_jax.data.records\n")
  _write(tmp_path, "slm_jax/data/records.py", "from slm_jax.units import audio\n")
  _write(tmp_path, "slm_jax/units/audio.py", "from .. import vocab\n")
  _write(tmp_path, "slm_jax/checkpoint/staging.py", "from ..train.lock import pid_alive\n")
  _write(tmp_path, "slm_jax/train/trainer.py", "from slm_jax.data import records\nfrom slm_jax.eval import run\n")
  _write(tmp_path, "slm_jax/train/lock.py")
  _write(tmp_path, "slm_jax/eval/run.py",
         "from slm_jax.model.logprobs import token_logprobs\nfrom slm_jax.data import records\n")
  _write(tmp_path, "slm_jax/newthing.py")
  _write(tmp_path, "tools/train.py", "from slm_jax.train import trainer\nfrom hf_tiny import tiny\n")
  _write(tmp_path, "configs/demo.py", "import tests.repo_configs\n")
  _write(tmp_path, "tests/hf_tiny.py")
  found = violations(str(tmp_path))
  expected = [
      "configs/demo.py:1: configs.demo imports tests.repo_configs from the tests",
      "slm_jax/checkpoint/staging.py:1: upward import: slm_jax.checkpoint.staging (layer 3 io) imports "
      "slm_jax.train.lock (layer 4 run)",
      "slm_jax/data/records.py:1: sibling import: slm_jax.data.records (slm_jax.data) imports slm_jax.units.audio "
      "(slm_jax.units); the packages of layer 3 io are independent",
      "slm_jax/eval/run.py:2: slm_jax.eval.run imports slm_jax.data.records: slm_jax.eval does not import slm_jax.data "
      "(APART)",
      "slm_jax/model/transformer.py:1: upward import: slm_jax.model.transformer (layer 2 model) imports "
      "slm_jax.data.records (layer 3 io)",
      "slm_jax/newthing.py: module slm_jax.newthing has no layer (add it to tests/test_layers.py LAYERS and README)",
      "slm_jax/train/trainer.py:2: sibling import: slm_jax.train.trainer (slm_jax.train) imports slm_jax.eval.run "
      "(slm_jax.eval); the packages of layer 4 run are independent",
      "slm_jax/vocab.py:5: upward import: slm_jax.vocab (layer 1 base) imports slm_jax.train.trainer (layer 4 run)",
      "tools/train.py:2: tools.train imports hf_tiny from the tests",
  ]
  assert found == expected, "\n".join(found)
