"""DPO step throughput: our jitted step (policy forward + backward, reference forward, clip, AdamW) vs the same step
in transformers + torch, on the same small Qwen2-shaped model, weights and batch, on this machine's CPU.

Model: hidden 256, intermediate 1024, 4 layers, 8 heads, 2 KV heads, q/k/v biases, rope theta 1e6, the Slam
502-token vocabulary; 8 pairs of 256-token rows (prompt 96 units, continuations of 64..160), fp32, sigmoid loss,
beta 0.1. Both sides start from the same weights, so their losses must agree (checked). The last line is one JSON
object with jax_pairs_per_s, torch_pairs_per_s and ratio.

--layout: how our side lays out the pairs. `shared` (default; config dpo.shared_prompt=True): one row per pair,
the prompt once and the two continuations as branches that see the prompt and themselves only (417 positions per
pair instead of 512). `rows`: two 256-token rows per pair, as the torch side (trl's layout) always has.

Each side runs in its own process, as a user runs it (ours after `console.setup`, as every tool), and the two
alternate for --rounds rounds, so that a shared machine's load falls on both; the figures are medians over all
timed steps of a side.

  PYTHONPATH=. .venv/bin/python tools/bench_dpo.py [--steps=4] [--rounds=3] [--pairs=8] [--seq_len=256]

--num_layers / --hidden_size / --seq_len shrink the model and rows (the prompt is 3/8 of a row) for a quick run.
"""
import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

_STEPS = flags.DEFINE_integer("steps", 4, "Timed steps per side (after 2 untimed ones, the first compiling).")
_PAIRS = flags.DEFINE_integer("pairs", 8, "Preference pairs per step (two rows each).")
_SEQ = flags.DEFINE_integer("seq_len", 256, "Row length.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds (one process per side per round).")
_LAYOUT = flags.DEFINE_enum("layout", "shared", ["shared", "rows"], "Our side's pair layout: shared-prompt rows "
                            "(dpo.shared_prompt) or two rows per pair as torch.")
_SIDE = flags.DEFINE_enum("side", "both", ["both", "jax", "torch"], "both: alternate the two sides in processes of "
                          "their own; jax / torch: run one side here and print its JSON line (what `both` calls).")
_LAYERS = flags.DEFINE_integer("num_layers", 4, "Decoder layers of the model (smaller: a quick smoke run).")
_HIDDEN = flags.DEFINE_integer("hidden_size", 256, "Model width (heads of 32, intermediate 4x).")
_BETA = 0.1


def _config():
  from slm_jax.model.config import preset
  h = _HIDDEN.value
  return preset("tiny-qwen2", vocab_size=502, hidden_size=h, intermediate_size=4 * h, num_hidden_layers=_LAYERS.value,
                num_attention_heads=h // 32, num_key_value_heads=max(1, h // 128), head_dim=32,
                tie_word_embeddings=True)


def _prompt_len(T: int) -> int:
  """Prompt units per pair: 96 at the default 256-token rows (continuations of T/4..5T/8: 64..160)."""
  return T * 3 // 8


def _batch(pairs: int, T: int, shared: bool = False):
  import numpy as np
  from slm_jax.data.preference import Pair, pair_rows, shared_pair_row
  from slm_jax.train.init import LAYOUTS
  rng = np.random.default_rng(0)
  rows = []
  prompt, lo, hi = _prompt_len(T), T // 4, T * 5 // 8
  for i in range(pairs):
    u = lambda n: rng.integers(0, 500, n).astype(np.int16)  # noqa: E731
    p = Pair(str(i), u(prompt), u(int(rng.integers(lo, hi))), u(int(rng.integers(lo, hi))))
    rows.append((shared_pair_row if shared else pair_rows)(p, LAYOUTS["slam"], T, max_prompt_len=prompt))
  return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def _time(fn, steps):
  for _ in range(2):
    fn()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return times


def bench_jax(cfg, state_dict, batch, steps, branches=None):
  import jax
  from flax import nnx
  from slm_jax.checkpoint.hf_import import from_torch_state_dict
  from slm_jax.sharding import make_mesh
  from slm_jax.train import dpo, optimizer
  from slm_jax.train.data import global_batch
  from slm_jax.train.step import compile_opt_init
  from slm_jax.train.checkpointing import abstract_like
  from slm_jax.model.create import model_shardings
  mesh = make_mesh(fsdp=1, devices=jax.devices()[:1])
  graphdef, abstract_state, shardings = model_shardings(cfg, mesh)
  param_sh = nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, shardings), nnx.Param))
  abstract = abstract_like(nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, abstract_state), nnx.Param)), param_sh)
  tx = optimizer.make_optimizer(1e-5, eps=1e-8, weight_decay=0.0, clip_norm=0.5)
  init, opt_sh = compile_opt_init(tx, abstract, param_sh, mesh)
  model = from_torch_state_dict(cfg, state_dict, mesh)
  params = jax.device_put(nnx.to_pure_dict(nnx.state(model, nnx.Param)), param_sh)
  with jax.set_mesh(mesh):
    ref_params = jax.tree.map(lambda x: x.copy(), params)
  opt = init(params)
  step = dpo.jit_dpo_step(dpo.make_dpo_step(graphdef, tx, beta=_BETA, loss_chunk=128, branches=branches), mesh,
                          param_sh, opt_sh)
  ref = dpo.jit_ref_logps(dpo.make_ref_logps(graphdef, loss_chunk=128, branches=branches), mesh, param_sh)
  gb = global_batch(batch, mesh)
  state = {"p": params, "o": opt, "losses": []}

  def one():
    b = dict(gb, ref_logps=ref(ref_params, gb))
    state["p"], state["o"], m = step(state["p"], state["o"], b, len(state["losses"]))
    state["losses"].append(float(m["loss"]))  # waits for the step
  return _time(one, steps), state["losses"]


def bench_torch(model, batch, steps):
  import copy
  import torch
  ref = copy.deepcopy(model).eval()
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
  ids, tgt = torch.tensor(batch["input_ids"]).long(), torch.tensor(batch["targets"]).long()
  att, mask = torch.tensor(batch["segment_ids"] > 0).long(), torch.tensor(batch["loss_mask"])
  losses = []

  def logps(m):
    lp = torch.log_softmax(m(ids, attention_mask=att).logits.float(), -1).gather(-1, tgt[..., None])[..., 0]
    return (lp * mask).sum(-1)

  def one():
    with torch.no_grad():
      r = logps(ref)
    p = logps(model)
    h = (p[0::2] - r[0::2]) - (p[1::2] - r[1::2])
    loss = -torch.nn.functional.logsigmoid(_BETA * h).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    opt.step()
    losses.append(loss.item())
  return _time(one, steps), losses


def _torch_model(cfg):
  import torch
  import transformers
  d = {k: v for k, v in cfg.to_hf_dict("float32").items() if k not in ("architectures", "model_type", "dtype")}
  torch.manual_seed(0)
  return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**d))


def run_side(side: str) -> dict:
  import torch
  cfg = _config()
  tm = _torch_model(cfg)
  shared = side == "jax" and _LAYOUT.value == "shared"
  batch = _batch(_PAIRS.value, _SEQ.value, shared)
  if side == "jax":
    from slm_jax import console
    from slm_jax.data.preference import shared_branches
    console.setup()  # what every tool does first
    branches = shared_branches(_SEQ.value, _prompt_len(_SEQ.value)) if shared else None
    times, losses = bench_jax(cfg, tm.state_dict(), batch, _STEPS.value, branches)
  else:
    times, losses = bench_torch(tm, batch, _STEPS.value)
  return {"side": side, "times": times, "losses": losses, "torch_threads": torch.get_num_threads(),
          "positions": int(batch["input_ids"].size),
          "params": sum(p.numel() for p in tm.parameters())}


def main(argv):
  del argv
  import numpy as np
  if _SIDE.value != "both":
    print(json.dumps(run_side(_SIDE.value)), flush=True)
    return
  load = os.getloadavg()[0]
  runs = {"jax": [], "torch": []}
  for r in range(_ROUNDS.value):
    for side in ("jax", "torch"):
      args = [sys.executable, os.path.abspath(__file__), f"--side={side}", f"--steps={_STEPS.value}",
              f"--pairs={_PAIRS.value}", f"--seq_len={_SEQ.value}", f"--layout={_LAYOUT.value}",
              f"--num_layers={_LAYERS.value}", f"--hidden_size={_HIDDEN.value}"]
      out = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
      if out.returncode:
        raise SystemExit(f"{side} side failed:\n{out.stderr[-3000:]}")
      res = json.loads(out.stdout.strip().splitlines()[-1])
      runs[side].append(res)
      print(f"round {r + 1} {side:5s}: " + " ".join(f"{t * 1e3:.0f}" for t in res["times"]) + " ms per step, losses "
            f"{[round(x, 6) for x in res['losses'][:3]]}", flush=True)
  for a, b in zip(runs["jax"], runs["torch"]):
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-3)  # the same step on the same weights
  t_jax = statistics.median([t for res in runs["jax"] for t in res["times"]])
  t_torch = statistics.median([t for res in runs["torch"] for t in res["times"]])
  pairs = _PAIRS.value
  print(f"model: {runs['torch'][0]['params'] / 1e6:.2f}M params, {pairs} pairs x 2 rows x {_SEQ.value}; load average "
        f"{load:.1f} at start, {os.getloadavg()[0]:.1f} at end, on {os.cpu_count()} cores")
  print(f"positions per step: slm_jax {runs['jax'][0]['positions']} ({_LAYOUT.value} layout), torch "
        f"{runs['torch'][0]['positions']}")
  print(f"slm_jax: {t_jax * 1e3:.0f} ms per step, {pairs / t_jax:.2f} pairs/s")
  print(f"torch:   {t_torch * 1e3:.0f} ms per step, {pairs / t_torch:.2f} pairs/s")
  print(json.dumps({"jax_pairs_per_s": pairs / t_jax, "torch_pairs_per_s": pairs / t_torch, "ratio": t_torch / t_jax,
                    "jax_step_s": t_jax, "torch_step_s": t_torch, "tokens_per_step": _PAIRS.value * 2 * _SEQ.value,
                    "layout": _LAYOUT.value, "jax_positions": runs["jax"][0]["positions"],
                    "rounds": _ROUNDS.value, "steps_per_round": _STEPS.value, "load_average": load,
                    "torch_threads": runs["torch"][0]["torch_threads"]}))


if __name__ == "__main__":
  app.run(main)
