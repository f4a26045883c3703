"""Installs slm_jax into a runtime that has its own jax / jaxlib / numpy (Colab, a GPU node) without changing them.

  python tools/colab_install.py [REPO_DIR]

`pip install --no-deps REPO_DIR`, then only the requirements that are missing or outside setup.py's ranges, with
the runtime's jax, jaxlib and numpy held at their installed versions (a pip constraints file). A kept package
outside its range is reported, not replaced. Standard library and pip only: it runs before anything is installed.
The notebook's install cell calls it; `plan` is what the tests check.
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import subprocess
import sys
import tempfile

try:
  from packaging.requirements import Requirement
  from packaging.utils import canonicalize_name
except ImportError:  # a bare venv: pip's own copy
  from pip._vendor.packaging.requirements import Requirement
  from pip._vendor.packaging.utils import canonicalize_name

KEEP = ("jax", "jaxlib", "numpy")  # the runtime's own (accelerator builds): never changed


def installed_version(name: str) -> str | None:
  try:
    return metadata.version(name)
  except metadata.PackageNotFoundError:
    return None


def plan(requirements: list[str], version_of=installed_version) -> tuple[list[str], list[str], list[str]]:
  """(requirements to install, constraints `name==version` holding the kept packages, notes)."""
  todo, hold, notes = [], [], []
  for text in requirements:
    r = Requirement(text)
    if r.marker is not None and not r.marker.evaluate({"extra": ""}):
      continue  # an extra's requirement
    have = version_of(r.name)
    if canonicalize_name(r.name) in KEEP and have is not None:
      hold.append(f"{r.name}=={have}")
      if not r.specifier.contains(have, prereleases=True):
        notes.append(f"{r.name} {have} is outside slm_jax's range {r.specifier}: kept (the runtime's own); "
                     "expect problems")
    elif have is None or not r.specifier.contains(have, prereleases=True):
      todo.append(str(r))
      notes.append(f"{r.name}: {'not installed' if have is None else have} -> {r.specifier}")
  return todo, hold, notes


def install(repo_dir: str, python: str = sys.executable) -> list[str]:
  """Installs the package and its missing requirements; returns the notes."""
  pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
  subprocess.run(pip + ["--no-deps", os.path.abspath(repo_dir)], check=True)
  importlib.invalidate_caches()
  todo, hold, notes = plan(metadata.requires("slm_jax") or [])
  if todo:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
      f.write("\n".join(hold) + "\n")
    try:
      subprocess.run(pip + ["-c", f.name] + todo, check=True)
    finally:
      os.unlink(f.name)
  return notes


if __name__ == "__main__":
  repo = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for line in install(repo):
    print("[install]", line)
  print("[install] slm_jax installed; kept:", ", ".join(f"{n} {installed_version(n)}" for n in KEEP))
