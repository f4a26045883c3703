"""DPO as a training objective (`train/objective.py`): its config rules, batch (two rows per pair, or one
shared-prompt row), the steps with the reference log-probs added to each batch, the reference set-up before the
first step, its FLOPs and its AOT memory. The loss math is in `loss.py`, the reference in `reference.py`.
"""
from __future__ import annotations

import os

import jax

from slm_jax.data.preference import shared_branches
from slm_jax.train import flops as flops_lib
from slm_jax.train import step as step_lib
from slm_jax.train.dpo import loss as loss_lib
from slm_jax.train.dpo import reference as ref_lib
from slm_jax.train.dpo.reference import REFERENCES
from slm_jax.train.memory import device_bytes, program_bytes
from slm_jax.train.objective import Objective


def config_branches(config):
  """The `Branches` of the run's shared-prompt rows (config.dpo.shared_prompt), else None (two rows per pair)."""
  if not config.dpo.get("shared_prompt", False):
    return None
  return shared_branches(config.seq_len, config.dpo.max_prompt_len or None)


def config_problems(config, process_count: int = 1) -> list[str]:
  """Every problem of a config with objective='dpo' that needs no files (`path_problems` has the files;
  validate.py checks config.data.kind): the preference folder named, an even global batch whose pairs divide into
  micro-batches and processes, the loss options (`loss.option_problems`), the reference mode and a prompt shorter
  than the sequence."""
  c, d = config, config.dpo
  out = []
  if not c.data.sources.get("preference", ""):
    out.append("config.data.sources.preference: empty, but objective='dpo' reads its pairs from there "
               "(tools/prepare_data.py --kind=preference)")
  b, n = c.global_batch_size, c.micro_batches
  if isinstance(b, int) and b >= 1:
    if b % 2:
      out.append(f"config.global_batch_size={b}: DPO counts rows, 2 per pair (chosen, rejected): it must be even")
    elif isinstance(n, int) and n >= 1 and (b // 2) % n:
      out.append(f"config.global_batch_size={b} holds {b // 2} pairs: they do not divide into micro_batches={n} "
                 "(a pair's two rows stay in one micro-batch)")
    elif b % 2 == 0 and (b // 2) % process_count:
      out.append(f"config.global_batch_size={b} holds {b // 2} pairs: they do not divide over {process_count} "
                 "processes")
  out += [f"config.{p}" for p in loss_lib.option_problems(d.beta, d.loss_type, d.label_smoothing)]
  if d.reference not in REFERENCES:
    out.append(f"config.dpo.reference={d.reference!r}: expected one of {', '.join(REFERENCES)}")
  m = d.max_prompt_len
  if not isinstance(m, int) or isinstance(m, bool) or m < 0:
    out.append(f"config.dpo.max_prompt_len={m!r}: must be an integer >= 0 (0: seq_len // 2)")
  elif isinstance(c.seq_len, int) and c.seq_len >= 1 and m >= c.seq_len:
    out.append(f"config.dpo.max_prompt_len={m} must be below config.seq_len={c.seq_len} (no room for the "
               "continuation)")
  if d.get("shared_prompt", False) and c.model.get("attention_impl", "auto") == "splash":
    out.append("config.dpo.shared_prompt=True needs attention_impl xla, cudnn or auto (the splash kernel has no "
               "branch mask): set config.model.attention_impl, or shared_prompt=False")
  return out


def path_problems(config, resuming: bool) -> list[str]:
  """The preference folder (a prepared one with train pairs), and on resume with the reference in memory the init
  folder it reloads the reference from (init.kind='random', the seeded model of the tests and the demo, needs
  none)."""
  from slm_jax.data import records
  c, out = config, []
  path = c.data.sources.get("preference", "")
  if path:
    key = f"config.data.sources.preference={path!r}"
    if not os.path.isdir(path):
      out.append(f"{key}: no such folder")
    else:
      try:
        manifest = records.read_manifest(path)
      except (OSError, ValueError) as e:
        out.append(f"{key}: {e}")
      else:
        if manifest.get("kind") != "preference":
          out.append(f"{key}: holds {manifest.get('kind')!r} documents, not preference pairs "
                     "(tools/prepare_data.py --kind=preference)")
        elif not manifest.get("splits", {}).get("train", {}).get("num_examples", 0):
          out.append(f"{key}: its train split has no pairs")
  if c.init.kind in ("hf", "orbax") and resuming and c.dpo.reference == "model":
    init = os.path.expanduser(c.init.path)
    if not init or not os.path.isdir(init):
      out.append(f"config.init.path={c.init.path!r}: no such folder, but a resumed DPO run with "
                 "dpo.reference='model' reloads its reference from it")
  return out


def _fingerprint(source) -> str | None:
  """`reference.params_fingerprint` of a run's starting weights, from its init source record."""
  return source.get("params_fingerprint") if isinstance(source, dict) else None


class DPO(Objective):
  """trl's DPO as slamkit's Slam recipe runs it: preference pairs, a frozen reference (in memory or its log-probs
  stored with the data); global_batch_size counts rows, two per pair."""

  name = "dpo"
  data_kinds = ("preference",)
  data_about = "preference pairs (data.kind 'preference', from tools/prepare_data.py --kind=preference)"
  extra_keys = ("ref_logps",)
  metric_names = loss_lib.METRIC_NAMES

  def config_problems(self, config, process_count: int = 1) -> list[str]:
    return config_problems(config, process_count)

  def path_problems(self, config, resuming: bool) -> list[str]:
    return path_problems(config, resuming)

  def batch_shape(self, config) -> tuple[int, int]:
    """global_batch_size rows of seq_len (2 per pair), or with dpo.shared_prompt one row per pair of
    `config_branches(config).total`."""
    br = config_branches(config)
    if br is None:
      return config.global_batch_size, config.seq_len
    return config.global_batch_size // 2, br.total

  def values_per_row(self, config) -> int:
    return 2 if config_branches(config) is not None else 1

  def make_iterator(self, config, layout, tokenizer, split, *, num_epochs=None, source=None):
    """The pairs of `split`; with dpo.reference='precomputed' the stored reference log-probs come along (read at
    the first batch from `reference.reference_path`, keyed by the starting weights' fingerprint in `source`)."""
    path = ref_lib.reference_path(config, _fingerprint(source)) if config.dpo.reference == "precomputed" else None
    return ref_lib.pairs_iterator(config, layout, split, num_epochs=num_epochs, shuffle=split == "train",
                                  ref_logps=path)

  def _options(self, config) -> dict:
    d = config.dpo
    return dict(beta=d.beta, loss_type=d.loss_type, label_smoothing=d.label_smoothing, loss_chunk=config.loss_chunk,
                branches=config_branches(config))

  def loss_sums(self, config, graphdef, training: bool):
    return loss_lib.pair_sums(graphdef, **self._options(config))

  def step_options(self, config) -> dict:
    return loss_lib.step_options(config_branches(config))

  def build_steps(self, config, graphdef, tx, lr_fn, mesh, param_shardings, opt_shardings):
    """The steps with `ref_logps` added to every batch by a `reference.Reference` (the run-time parts)."""
    step, ev, _ = super().build_steps(config, graphdef, tx, lr_fn, mesh, param_shardings, opt_shardings)
    fwd = ref_lib.make_ref_logps(graphdef, config.loss_chunk, config_branches(config))
    parts = ref_lib.Reference(ref_lib.jit_ref_logps(fwd, mesh, param_shardings, self.batch_shardings(mesh)),
                              config.dpo.reference, self.values_per_row(config))

    def train_step(params, opt_state, batch, step_no):
      return step(params, opt_state, parts.with_ref(batch), step_no)

    def eval_step(params, batch):
      return ev(params, parts.with_ref(batch))

    train_step.jitted = step.jitted
    return train_step, eval_step, parts

  def start_source(self, source: dict, params) -> dict:
    """The weights the run starts from (the reference) are fingerprinted and recorded with every checkpoint."""
    return dict(source, params_fingerprint=ref_lib.params_fingerprint(params))

  def prepare(self, config, prog, layout, params, *, fresh, param_dtype, dtype, source):
    ref_lib.prepare_reference(config, prog, layout, params, fresh=fresh, param_dtype=param_dtype, dtype=dtype,
                              fingerprint=_fingerprint(source))

  def flops_per_slot(self, config, cfg) -> float:
    """The training step plus, with dpo.reference='model', one forward of the frozen reference on every row (a
    precomputed reference runs none in the step). Shared-prompt rows hold a pair in 2 * seq_len + 1 -
    max_prompt_len positions instead of 2 * seq_len: the figure is scaled by that ratio."""
    fpt = flops_lib.flops_per_token(cfg, config.seq_len)
    if config.dpo.reference == "model":
      fpt += flops_lib.flops_per_token(cfg, config.seq_len, training=False)
    branches = config_branches(config)
    if branches is not None:
      fpt *= branches.total / (2 * config.seq_len)
    return fpt

  def memory_report(self, config, prog, mesh, step_bytes: int, gb: float = 1e9) -> tuple[dict, int]:
    """With the reference in memory (dpo.reference='model') its params stay beside the step, and its forward is a
    second program run while the policy and optimizer state are resident: the total is the larger peak."""
    rec = {"dpo_reference": config.dpo.reference}
    if config.dpo.reference != "model":
      return rec, step_bytes
    ref = device_bytes(prog.abstract_params)
    batch = self.abstract_batch(config, mesh, with_extras=False)
    with jax.set_mesh(mesh):
      rma = prog.parts.ref_run.jitted.lower(prog.abstract_params, batch).compile().memory_analysis()
    ref_peak = program_bytes(rma) + ref + device_bytes(prog.abstract_opt)
    rec.update(train_step_gb=round(step_bytes / gb, 3), reference_params_gb=round(ref / gb, 3),
               reference_forward_temp_gb=round(rma.temp_size_in_bytes / gb, 3),
               reference_forward_peak_gb=round(ref_peak / gb, 3),
               total_note="max(train step + the frozen reference's params, reference forward program + the "
                          "policy's params and optimizer state), per device")
    return rec, max(step_bytes + ref, ref_peak)


def jit_dpo_step(step_fn, mesh, param_shardings, opt_shardings):
  """`step.jit_train_step` of a DPO step: the batch with `ref_logps` (one value per sequence, 2 per pair)."""
  return step_lib.jit_train_step(step_fn, mesh, param_shardings, opt_shardings, DPO().batch_shardings(mesh))


def jit_dpo_eval(eval_fn, mesh, param_shardings):
  return step_lib.jit_eval_step(eval_fn, mesh, param_shardings, DPO().batch_shardings(mesh))


def jit_ref_logps(ref_fn, mesh, param_shardings):
  """`reference.jit_ref_logps` with the DPO batch's shardings."""
  return ref_lib.jit_ref_logps(ref_fn, mesh, param_shardings, DPO().batch_shardings(mesh))
