"""The repository's ml_collections configs for tests: loaded from configs/<name>.py, with dotted-key overrides."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg=None):
  """configs/<name>.py's get_config(arg); `name` with or without `.py`."""
  name = name[:-3] if name.endswith(".py") else name
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", name + ".py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def set_keys(c, overrides: dict):
  """c with each dotted key ("dpo.beta") set to its value (c must be unlocked); returns c."""
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return c
