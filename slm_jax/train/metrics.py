"""Run metrics: the progress line, TensorBoard scalars and `workdir/metrics.jsonl` (one JSON object per log)."""
from __future__ import annotations

import json
import logging
import math
import os

from slm_jax.vocab import KIND_NAMES


def kind_losses(kind_nll, kind_count, prefix: str = "loss_") -> dict:
  """{'loss_text': ..., 'loss_unit': ..., 'loss_marker': ...} (NaN-free: kinds without labels are omitted)."""
  out = {}
  for name, s, c in zip(KIND_NAMES, kind_nll, kind_count):
    if c > 0:
      out[prefix + name] = float(s) / float(c)
  return out


def format_eta(seconds: float) -> str:
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  h, rem = divmod(int(seconds), 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress_line(m: dict) -> str:
  parts = [f"step {m['step']}", f"loss {m['loss']:.4f}"]
  for name in KIND_NAMES:
    if f"loss_{name}" in m:
      parts.append(f"{name} {m[f'loss_{name}']:.3f}")
  if "rewards/accuracies" in m:  # DPO (trl's names)
    parts += [f"reward acc {m['rewards/accuracies']:.2f}", f"margin {m['rewards/margins']:.3f}"]
  parts += [f"gnorm {m['grad_norm']:.3f}", f"lr {m['lr']:.3g}", f"tok/s {m['tokens_per_s']:.0f}",
            f"TFLOP/s/dev {m['tflops_per_device']:.2f}"]
  parts.append("MFU " + (f"{100 * m['mfu']:.1f}%" if m.get("mfu") is not None else "unknown"))
  parts += [f"seen {m['tokens_seen']:.3g}", f"ETA {format_eta(m.get('eta_s', float('nan')))}"]
  return " | ".join(parts)


def _json_value(v):
  return None if isinstance(v, float) and not math.isfinite(v) else v


def _summary_writer(logdir: str):
  """tensorboardX's SummaryWriter, imported without torch (tensorboardX imports torch if it can: +5 s)."""
  import sys
  blocked = "torch" not in sys.modules
  if blocked:
    sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter
  finally:
    if blocked:
      del sys.modules["torch"]
  return SummaryWriter(logdir)


def read_jsonl(path: str) -> list[dict]:
  """Records of a metrics.jsonl; a line cut short by a kill is skipped."""
  out = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          out.append(json.loads(line))
        except json.JSONDecodeError:
          pass
  return out


def _keep_until(path: str, step: int) -> None:
  """On resume from `step`: drop records of later steps (they will be logged again), and any torn line."""
  kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in kept)
  os.replace(tmp, path)


class MetricsWriter:
  """Writes on process 0 only: metrics.jsonl (appended, flushed per line) and TensorBoard events.

  Resuming from step s first drops the records after s, so the file reads like one uninterrupted run.
  """

  def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True, resume_step: int = 0):
    self.enabled = enabled
    self.jsonl = None
    self.tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
      _keep_until(path, resume_step)
    self.jsonl = open(path, "a")
    if tensorboard:
      try:
        self.tb = _summary_writer(os.path.join(workdir, "tb"))
      except ImportError:
        logging.warning("tensorboardX is not installed: no TensorBoard events")

  def write_config(self, text: str) -> None:
    if self.tb is not None:
      self.tb.add_text("config", "```\n" + text + "\n```", 0)

  def write(self, record: dict, print_line: str | None = None) -> None:
    if not self.enabled:
      return
    self.jsonl.write(json.dumps({k: _json_value(v) for k, v in record.items()}) + "\n")
    self.jsonl.flush()
    if self.tb is not None:
      step = record["step"]
      for k, v in record.items():
        if k != "step" and isinstance(v, (int, float)) and v is not None and math.isfinite(v):
          self.tb.add_scalar(k, v, step)
      self.tb.flush()
    if print_line:
      print(print_line, flush=True)

  def close(self) -> None:
    if self.jsonl is not None:
      self.jsonl.close()
    if self.tb is not None:
      self.tb.close()
