"""Checks a whole training config before any device work; one `ConfigError` lists every problem found.

Rules: positive learning rate and sizes (min_lr >= 0), a global batch that divides over the mesh's data x fsdp
devices, the processes and the micro-batches, seq_len within the model's positions, known names for every
choice (precision, attention, init, objective, data kind, ...), input paths that exist, a stop condition
(step count or token budget) that can be met, and the objective's own rules (`objective.Objective.config_problems`,
`path_problems`). Reads only small JSON files (HF config.json, manifests, the run's own checkpoint metadata); never
builds a model or touches an accelerator.
"""
from __future__ import annotations

import json
import math
import os
import re

from slm_jax import assets, sharding
from slm_jax.model.config import ATTENTION_IMPLS, PRESETS, REMAT_POLICIES, ModelConfig
from slm_jax.train import objectives
from slm_jax.train.checkpointing import CHECKPOINT_DIR


class ConfigError(ValueError):
  """Every problem of a config at once (`problems`), one per line in the message."""

  def __init__(self, problems: list[str]):
    self.problems = list(problems)
    super().__init__(f"invalid training config ({len(problems)} problem{'s' * (len(problems) != 1)}):\n"
                     + "\n".join(f"  - {p}" for p in problems))


def _num(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_numbers(c) -> list[str]:
  """Learning rates, sizes, intervals and optimizer constants in their ranges."""
  out = []

  def need(key, value, ok, what):
    if not _num(value) or not ok(value):
      out.append(f"config.{key}={value!r}: must be {what}")

  o = c.optim
  need("optim.lr", o.lr, lambda v: v > 0, "> 0")
  need("optim.min_lr", o.min_lr, lambda v: v >= 0, ">= 0")
  if _num(o.lr) and _num(o.min_lr) and o.min_lr > o.lr > 0:
    out.append(f"config.optim.min_lr={o.min_lr!r}: must not exceed optim.lr={o.lr!r}")
  need("optim.warmup_frac", o.warmup_frac, lambda v: 0 <= v <= 1, "in [0, 1]")
  need("optim.warmup_min_steps", o.warmup_min_steps, lambda v: v >= 0, ">= 0")
  need("optim.b1", o.b1, lambda v: 0 <= v < 1, "in [0, 1)")
  need("optim.b2", o.b2, lambda v: 0 <= v < 1, "in [0, 1)")
  need("optim.eps", o.eps, lambda v: v > 0, "> 0")
  need("optim.weight_decay", o.weight_decay, lambda v: v >= 0, ">= 0")
  need("optim.clip_norm", o.clip_norm, lambda v: v >= 0, ">= 0 (0: no clipping)")
  for key in ("seq_len", "global_batch_size", "micro_batches", "loss_chunk", "log_every", "keep_last"):
    need(key, c[key], lambda v: v >= 1, ">= 1")
  for key in ("eval_every", "checkpoint_every", "keep_every", "inject_nan_at_step"):
    need(key, c[key], lambda v: v >= 0, ">= 0")
  need("data.num_workers", c.data.num_workers, lambda v: v >= 0, ">= 0")
  if _num(c.eval_every) and c.eval_every > 0:
    need("eval_batches", c.eval_batches, lambda v: v >= 1, ">= 1 when eval_every > 0")
  if c.data.num_epochs is not None:
    need("data.num_epochs", c.data.num_epochs, lambda v: v >= 1, ">= 1 (or unset: repeat forever)")
  if c.model.vocab_size != -1:
    need("model.vocab_size", c.model.vocab_size, lambda v: v >= 1, ">= 1 (or -1: from the vocabulary)")
  need("vocab.num_units", c.vocab.num_units, lambda v: v >= 0, ">= 0")
  for kind, w in c.data.weights.items():
    need(f"data.weights.{kind}", w, lambda v: v >= 0, ">= 0")
  return out


def resolve_mesh(c, device_count: int) -> tuple[dict | None, list[str]]:
  """({'data', 'fsdp', 'tensor'} sizes on `device_count` devices, problems): `sharding.resolve_mesh_shape`."""
  try:
    return sharding.resolve_mesh_shape(c.mesh.data, c.mesh.fsdp, c.mesh.tensor, device_count), []
  except ValueError as e:
    return None, str(e).split("; ")


def _objective(c):
  """The config's objective, or None when config.objective names none (check_choices reports it)."""
  try:
    return objectives.get(c)
  except ValueError:
    return None


def check_batch(c, device_count: int | None, process_count: int = 1) -> list[str]:
  """The global batch divides over micro-batches, processes and the mesh's batch axes (data x fsdp)."""
  b = c.global_batch_size
  if not (_num(b) and b >= 1):
    return []  # reported by check_numbers
  out = []
  if _num(c.micro_batches) and c.micro_batches >= 1 and b % c.micro_batches:
    out.append(f"config.global_batch_size={b} does not divide into micro_batches={c.micro_batches}")
  if b % process_count:
    out.append(f"config.global_batch_size={b} does not divide over {process_count} processes")
  if device_count is None:
    fixed = math.prod(v for k, v in c.mesh.items() if k in ("data", "fsdp") and isinstance(v, int) and v > 0)
    if b % fixed:
      out.append(f"config.global_batch_size={b} does not divide over mesh data x fsdp = {fixed}")
    return out
  shape, problems = resolve_mesh(c, device_count)
  out += problems
  rows, what = b, f"config.global_batch_size={b} does"
  objective = _objective(c)
  try:
    got = objective.batch_shape(c)[0] if objective is not None else b
  except (ValueError, TypeError, ZeroDivisionError):
    got = b  # the objective's own rules report why it has no batch shape
  if got != b:
    rows, what = got, f"config.global_batch_size={b} makes {got} rows (objective {objective.name!r}), which do"
  if shape is not None and rows % (shape["data"] * shape["fsdp"]):
    out.append(f"{what} not divide over the mesh's data x fsdp = "
               f"{shape['data']} x {shape['fsdp']} devices (mesh {shape} on {device_count} devices)")
  return out


def check_choices(c) -> list[str]:
  """Every named choice is one the code knows."""
  from slm_jax.data import interleave, records
  from slm_jax.train import data as data_lib
  from slm_jax.train.init import INIT_KINDS, LAYOUTS
  from slm_jax.train.optimizer import PRECISIONS
  out = []

  def one_of(key, value, known):
    if value not in known:
      out.append(f"config.{key}={value!r}: expected one of {', '.join(map(str, known))}")

  one_of("precision", c.precision, tuple(PRECISIONS))
  one_of("model.attention_impl", c.model.attention_impl, ATTENTION_IMPLS)
  if c.model.attention_impl == "cudnn" and PRECISIONS.get(c.precision, ("", "bfloat16"))[1] == "float32":
    out.append(f"config.model.attention_impl='cudnn' needs a bf16 compute dtype; precision={c.precision!r} "
               "computes in float32 (use attention_impl='xla' or precision 'bf16' / 'mixed')")
  one_of("init.kind", c.init.kind, INIT_KINDS)
  one_of("objective", c.get("objective", "lm"), tuple(objectives.OBJECTIVES))
  one_of("data.kind", c.data.kind, data_lib.DATA_KINDS)
  objective = _objective(c)
  if objective is not None and c.data.kind in data_lib.DATA_KINDS and c.data.kind not in objective.data_kinds:
    out.append(f"config.data.kind={c.data.kind!r}: objective={objective.name!r} trains on {objective.data_about}")
  one_of("data.interleave_mode", c.data.interleave_mode, interleave.MODES)
  if c.vocab.layout:
    one_of("vocab.layout", c.vocab.layout, tuple(LAYOUTS))
  if c.init.kind == "random":
    one_of("model.preset", c.model.preset, tuple(sorted(PRESETS)))
  one_of("model.remat_policy", c.model.get("remat_policy", "nothing_saveable"), REMAT_POLICIES)
  fields = {f for f in ModelConfig.__dataclass_fields__}
  for k in c.model.overrides.keys():
    if k not in fields:
      out.append(f"config.model.overrides.{k}: not a ModelConfig field")
  if c.data.kind == "pipeline":
    sources = [k for k, v in c.data.sources.items() if v]
    if not sources:
      out.append(f"config.data.sources: no prepared folder given (kinds {', '.join(records.KINDS)})")
    elif not any(c.data.weights.get(k, 0) > 0 for k in sources if _num(c.data.weights.get(k, 0))):
      out.append(f"config.data.weights={dict(c.data.weights)}: no positive weight for the given sources {sources}")
  return out


def check_paths(c, resuming: bool) -> list[str]:
  """Inputs that must exist: the init checkpoint (fresh starts only), the tokenizer and the prepared data."""
  from slm_jax.data import records
  out = []
  if not resuming and c.init.kind in ("hf", "orbax"):
    path = os.path.expanduser(c.init.path)
    if not path:
      out.append(f"config.init.path: empty, but init.kind={c.init.kind!r} needs a folder")
    elif not os.path.isdir(path):
      out.append(f"config.init.path={c.init.path!r}: no such folder")
    elif c.init.kind == "hf" and not os.path.isfile(os.path.join(path, "config.json")):
      out.append(f"config.init.path={c.init.path!r}: no config.json in it (not a Hugging Face model folder)")
  if c.vocab.tokenizer.startswith("asset:"):
    if c.vocab.tokenizer[len("asset:"):] not in assets.NAMED:
      out.append(f"config.vocab.tokenizer={c.vocab.tokenizer!r}: unknown asset (known: {sorted(assets.NAMED)})")
  elif c.vocab.tokenizer and not resuming and not os.path.isdir(os.path.expanduser(c.vocab.tokenizer)):
    out.append(f"config.vocab.tokenizer={c.vocab.tokenizer!r}: no such folder")
  if c.data.kind == "pipeline":
    for kind, path in c.data.sources.items():
      if not path:
        continue
      key = f"config.data.sources.{kind}={path!r}"
      if not os.path.isdir(path):
        out.append(f"{key}: no such folder")
        continue
      try:
        manifest = records.read_manifest(path)
      except (OSError, ValueError) as e:
        out.append(f"{key}: {e}")
        continue
      if manifest.get("kind") not in (None, kind):
        out.append(f"{key}: holds {manifest['kind']!r} documents, not {kind!r}")
      splits = manifest.get("splits", {})
      if not splits.get("train", {}).get("num_examples", 0):
        out.append(f"{key}: its train split has no documents")
    if c.eval_every > 0 and not any(
        _validation_docs(p) for p in c.data.sources.values() if p and os.path.isdir(p)):
      out.append("config.eval_every > 0 but no data source has validation documents (set eval_every=0)")
  return out


def _validation_docs(path: str) -> int:
  try:
    with open(os.path.join(path, "manifest.json")) as f:
      return int(json.load(f)["splits"]["validation"]["num_examples"])
  except (OSError, ValueError, KeyError, TypeError):
    return 0


def checkpoint_steps(workdir: str | None) -> list[int]:
  """Step folders in `<workdir>/checkpoints`, newest first (complete or not)."""
  d = os.path.join(workdir, CHECKPOINT_DIR) if workdir else ""
  if not d or not os.path.isdir(d):
    return []
  return sorted((int(n) for n in os.listdir(d) if re.fullmatch(r"\d+", n)), reverse=True)


def model_positions(c, workdir: str | None) -> tuple[int | None, str]:
  """(max_position_embeddings, where it comes from) of the model the run will train; None when unknown."""
  for step in checkpoint_steps(workdir):
    try:
      with open(os.path.join(workdir, CHECKPOINT_DIR, str(step), "meta", "metadata")) as f:
        return int(json.load(f)["model_config"]["max_position_embeddings"]), f"checkpoint step {step}"
    except (OSError, ValueError, KeyError, TypeError):
      continue
  over = dict(c.model.overrides)
  if "max_position_embeddings" in over:
    return int(over["max_position_embeddings"]), "config.model.overrides"
  if c.init.kind == "random" and c.model.preset in PRESETS:
    return PRESETS[c.model.preset].max_position_embeddings, f"preset {c.model.preset!r}"
  if c.init.kind == "hf":
    try:
      with open(os.path.join(os.path.expanduser(c.init.path), "config.json")) as f:
        return int(json.load(f).get("max_position_embeddings", 2048)), f"{c.init.path}/config.json"
    except (OSError, ValueError, TypeError):
      return None, ""
  return None, ""


def check_positions(c, workdir: str | None) -> list[str]:
  n, where = model_positions(c, workdir)
  if n is not None and _num(c.seq_len) and c.seq_len > n:
    return [f"config.seq_len={c.seq_len} exceeds the model's max_position_embeddings={n} ({where})"]
  return []


def check_stop(c) -> list[str]:
  """A stop condition that can be met: a step count or token budget (the schedule's length), none negative."""
  out = []
  for key in ("total_steps", "token_budget", "max_wall_s"):
    v = c[key]
    if not _num(v) or v < 0:
      out.append(f"config.{key}={v!r}: must be >= 0 (0: unset)")
  steps = c.total_steps if _num(c.total_steps) else 0
  budget = c.token_budget if _num(c.token_budget) else 0
  if steps <= 0 and budget <= 0 and not out:
    wall = f" (max_wall_s={c.max_wall_s} alone gives no learning-rate schedule)" if c.max_wall_s else ""
    out.append(f"config.total_steps and config.token_budget are both 0: set one{wall}")
  elif 0 < budget < 1:
    out.append(f"config.token_budget={budget!r}: less than one label token")
  return out


def check_objective(c, resuming: bool, process_count: int = 1) -> list[str]:
  """The objective's own rules (`Objective.config_problems`, `Objective.path_problems`)."""
  objective = _objective(c)
  if objective is None:
    return []
  return objective.config_problems(c, process_count) + objective.path_problems(c, resuming)


def problems(config, workdir: str | None = None, device_count: int | None = None,
             process_count: int = 1) -> list[str]:
  """Every problem of `config` (empty when it is valid). device_count None skips what needs it (mesh -1 axes)."""
  resuming = bool(checkpoint_steps(workdir))
  out = check_numbers(config) + check_batch(config, device_count, process_count) + check_choices(config)
  out += check_paths(config, resuming) + check_positions(config, workdir) + check_stop(config)
  out += check_objective(config, resuming, process_count)
  return out


def validate(config, workdir: str | None = None, device_count: int | None = None, process_count: int = 1) -> None:
  """Raises ConfigError listing every problem of `config`."""
  found = problems(config, workdir, device_count, process_count)
  if found:
    raise ConfigError(found)
