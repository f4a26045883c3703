"""Train-step throughput: our jit'd step (forward, backward, clip 0.5, AdamW) vs transformers + torch, and MFU.

CPU mode (default): hidden 512, intermediate 1536, 8 layers, 8 heads, 4 KV heads, vocab 128758, tied embeddings,
sequence 1024, batch 4, fp32 (the model flags shrink it); the same model, weights and step in transformers +
torch. Each side runs in its own process, as a user runs it (ours after `console.setup`, as every tool), and the
two alternate for --rounds rounds, so that a shared or drifting host's speed falls on both; the figures are
medians over all timed steps of a side, the peak (a measured f32 matmul) the median of one probe per jax round.
The last line is one JSON object with jax_tokens_per_s, torch_tokens_per_s and ratio.

  PYTHONPATH=. .venv/bin/python tools/bench_train.py [--rounds=3] [--steps=2] [--side=jax|torch]

GPU mode (`--preset` given): a preset model in our step only (no torch), several (batch, remat, packing)
settings, each in its own try/except so an out-of-memory one does not lose the rest; prints each result as it
comes and the best as the last line (JSON).

  python3 tools/bench_train.py --preset=llama3.2-3b --seq_len=2048 --dtype=bfloat16 --attention_impl=cudnn \
      --batch=4,8,16 --remat=auto
"""
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

_PRESET = flags.DEFINE_string("preset", None, "Model preset (GPU mode); unset: the CPU comparison.")
_SEQ = flags.DEFINE_integer("seq_len", None, "Sequence length (default 1024 CPU, 2048 GPU).")
_BATCH = flags.DEFINE_list("batch", None, "Batch sizes to try (default 4 CPU; 4,8,16 GPU).")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Compute dtype (default fp32 CPU, bf16 GPU).")
_PRECISION = flags.DEFINE_enum("precision", None, ["fp32", "mixed", "bf16"],
                               "Weights/optimizer precision (default: fp32 for float32, bf16 for bfloat16).")
_ATTN = flags.DEFINE_enum("attention_impl", "xla", ["xla", "cudnn"], "Attention path.")
_REMAT = flags.DEFINE_enum("remat", "auto", ["auto", "on", "off"],
                           "auto: without remat first, then with remat for the batch sizes that did not fit.")
_PACKED = flags.DEFINE_enum("packed", "both", ["both", "on", "off"],
                            "GPU: both = causal rows, then packed rows (segment ids -> masked attention) at the "
                            "best causal setting.")
_STEPS = flags.DEFINE_integer("steps", None, "Timed steps per setting (default 2 CPU, 10 GPU).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps, the first (compiling) one included.")
_MAX_S = flags.DEFINE_float("max_seconds", 420.0, "GPU: stop trying new settings after this many seconds.")
_TORCH = flags.DEFINE_bool("torch", True, "CPU mode: also time transformers + torch.")
_CHUNK = flags.DEFINE_integer("loss_chunk", None, "Sequence positions per chunk of fp32 logits (default 128 CPU: "
                              "[4, 512, 128768] fp32 chunks fall out of cache there; 512 GPU).")
_FUSED = flags.DEFINE_bool("fused_loss", True, "Loss gradient formed in the forward pass (no logits recompute).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "CPU: alternating rounds (one process per side per round).")
_SIDE = flags.DEFINE_enum("side", "both", ["both", "jax", "torch"], "CPU: both = alternate the two sides in "
                          "processes of their own; jax / torch: run one side here and print its JSON line.")
_HIDDEN = flags.DEFINE_integer("hidden_size", 512, "CPU model: width.")
_INTER = flags.DEFINE_integer("intermediate_size", 1536, "CPU model: MLP width.")
_LAYERS = flags.DEFINE_integer("num_layers", 8, "CPU model: decoder layers.")
_HEADS = flags.DEFINE_integer("num_heads", 8, "CPU model: attention heads (head_dim = hidden_size / num_heads).")
_KV = flags.DEFINE_integer("num_kv_heads", 4, "CPU model: KV heads.")
_VOCAB = flags.DEFINE_integer("vocab_size", 128758, "CPU model: vocabulary (Llama-3 + 502 Slam ids).")
_PROBE = flags.DEFINE_integer("probe_size", 2048, "CPU: n of the n x n x n f32 matmul measured as the peak.")
_BASELINE = flags.DEFINE_string("baseline_tree", None, "CPU: another checkout of the repository (e.g. `git archive` of "
                                "an older commit); its jax side alternates with this tree's instead of torch.")
_TEMP = flags.DEFINE_bool("temp_memory", False, "CPU: also report the compiled step's temporary bytes.")
_SCAN = flags.DEFINE_bool("scan_layers", False, "CPU model: layers stored stacked and run as one lax.scan.")
_REMAT_POLICY = flags.DEFINE_string("remat_policy", None, "CPU: rematerialise each layer keeping what this policy "
                                    "saves (slm_jax.model.config.REMAT_POLICIES); unset: no remat.")
# what a side process is given of the parent's flags (all but these)
_PARENT_ONLY = ("rounds", "side", "baseline_tree")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cpu_config():
  from slm_jax.model.config import ModelConfig
  if _HIDDEN.value % _HEADS.value or _HEADS.value % _KV.value:
    raise SystemExit(f"--hidden_size={_HIDDEN.value} must divide by --num_heads={_HEADS.value}, and num_heads by "
                     f"--num_kv_heads={_KV.value}")
  cfg = ModelConfig("llama", _VOCAB.value, _HIDDEN.value, _INTER.value, _LAYERS.value, _HEADS.value, _KV.value,
                    _HIDDEN.value // _HEADS.value, 1e-5, 500000.0, None, 131072, True, False)
  extra = {"remat_policy": _REMAT_POLICY.value} if _REMAT_POLICY.value else {}  # older trees lack the field
  return cfg.replace(scan_layers=_SCAN.value, **extra)


def _batch(B, T, vocab, packed=False, seed=0):
  import numpy as np
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab, (B, T + 1)).astype(np.int32)
  seg = np.ones((B, T), np.int32)
  pos = np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)).copy()
  if packed:  # two documents per row, as packing makes them
    seg[:, T // 3:] = 2
    pos[:, T // 3:] -= T // 3
  mask = np.ones((B, T), np.float32)
  if packed:
    mask[:, T // 3 - 1] = 0.0
  return {"input_ids": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": mask, "segment_ids": seg,
          "positions": pos, "kind": np.zeros((B, T), np.int8)}


class JaxStep:
  """Params and AdamW state on one device (created once), and our jit'd train step for a setting."""

  def __init__(self, cfg, precision, model=None):
    import jax
    from flax import nnx
    from slm_jax.model.create import create_model, model_shardings
    from slm_jax.sharding import make_mesh
    from slm_jax.train import optimizer, step as step_lib
    try:
      from slm_jax.train.lm import make_train_step
    except ImportError:  # a tree from before issue 20 on PYTHONPATH (before / after comparisons of the library)
      make_train_step = step_lib.make_train_step
    self.jax, self.nnx, self.step_lib, self.model_shardings = jax, nnx, step_lib, model_shardings
    self.make_train_step = make_train_step
    self.loss_chunk = _CHUNK.value or (128 if jax.default_backend() == "cpu" else 512)
    self.mesh = make_mesh(fsdp=1, devices=jax.devices()[:1])
    pdt, dt, mdt = optimizer.precision_dtypes(precision)
    self.cfg = cfg.replace(param_dtype=pdt, dtype=dt)
    self.tx = optimizer.make_optimizer(optimizer.schedule(1e-4, 1e-5, 1000, 10), clip_norm=0.5, moment_dtype=mdt)
    model = create_model(self.cfg, self.mesh, seed=0) if model is None else model
    self.params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    self.param_sh = jax.tree.map(lambda x: x.sharding, self.params)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), self.params)
    init, self.opt_sh = step_lib.compile_opt_init(self.tx, abstract, self.param_sh, self.mesh)
    self.opt = init(self.params)

  def alive(self) -> bool:
    return not any(x.is_deleted() for x in self.jax.tree.leaves((self.params, self.opt)))

  def time(self, batch_np, remat, packed, steps, warmup):
    """(seconds per step list, seconds of the first step (compiles), loss of the first step)."""
    jax = self.jax
    from slm_jax.train.data import global_batch
    graphdef = self.model_shardings(self.cfg.replace(remat=remat), self.mesh)[0]
    fn = self.step_lib.jit_train_step(self.make_train_step(graphdef, self.tx, packed=packed, fused_loss=_FUSED.value,
                                                           loss_chunk=self.loss_chunk),
                                      self.mesh, self.param_sh, self.opt_sh)
    batch = global_batch(batch_np, self.mesh)
    if _TEMP.value:  # the compiled step's temporaries (one more compile, before the timed steps)
      ma = fn.jitted.lower(self.params, self.opt, batch, jax.numpy.asarray(0, jax.numpy.int32)).compile()
      self.temp_bytes = int(ma.memory_analysis().temp_size_in_bytes)
    t = time.perf_counter()
    self.params, self.opt, m = fn(self.params, self.opt, batch, 0)
    first = float(m["loss"])
    compile_s = time.perf_counter() - t
    for i in range(warmup - 1):
      self.params, self.opt, m = fn(self.params, self.opt, batch, i + 1)
    jax.block_until_ready(m)
    times = []
    for i in range(steps):
      t = time.perf_counter()
      self.params, self.opt, m = fn(self.params, self.opt, batch, i + 1)
      float(m["loss"])  # waits for the step
      times.append(time.perf_counter() - t)
    return times, compile_s, first


def _torch_model(cfg):
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  hf = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                   num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                   num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_norm_eps,
                   rope_theta=cfg.rope_theta, tie_word_embeddings=True, max_position_embeddings=4096)
  return LlamaForCausalLM(hf).float().train()


def _torch_times(model, batch_np, steps, warmup):
  import numpy as np
  import torch
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
  ids = torch.from_numpy(np.asarray(batch_np["input_ids"])).long()
  labels = torch.from_numpy(np.asarray(batch_np["targets"])).long()  # already the next tokens: no shift here

  def step():
    out = model(input_ids=ids)
    logits = out.logits.float()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())

  first = step()
  for _ in range(warmup - 1):
    step()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - t)
  return times, first


def _cpu_shape():
  return (_SEQ.value or 1024, int((_BATCH.value or ["4"])[0]), _STEPS.value or 2, _DTYPE.value or "float32")


def run_side(side: str) -> dict:
  """One CPU side in this process: {times (s per timed step), first_loss, ...} (jax: after `console.setup`)."""
  cfg = _cpu_config()
  T, B, steps, dtype = _cpu_shape()
  batch = _batch(B, T, cfg.vocab_size)
  tmodel = _torch_model(cfg) if _TORCH.value else None  # the same seed, so the same weights in both processes
  if side == "torch":
    import torch
    times, loss = _torch_times(tmodel, batch, steps, _WARMUP.value)
    return {"side": side, "times": times, "first_loss": loss, "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads()}
  from slm_jax import console
  console.setup()  # what every tool does first (host allocator tuned for XLA:CPU)
  import jax
  from slm_jax.train import flops
  shared = None
  if tmodel is not None:
    from slm_jax.checkpoint.hf_import import from_torch_state_dict
    from slm_jax.sharding import make_mesh
    shared = from_torch_state_dict(cfg.replace(dtype=dtype), tmodel.state_dict(),
                                   make_mesh(fsdp=1, devices=jax.devices()[:1]))
    del tmodel
  js = JaxStep(cfg.replace(dtype=dtype), _PRECISION.value or ("fp32" if dtype == "float32" else "bf16"), shared)
  del shared
  times, compile_s, loss = js.time(batch, remat=bool(_REMAT_POLICY.value), packed=False, steps=steps,
                                   warmup=_WARMUP.value)
  temp = getattr(js, "temp_bytes", None)
  del js
  gc.collect()
  if jax.default_backend() == "cpu":  # probed after the steps, in the same round
    peak, src = flops.measure_matmul_flops(_PROBE.value), f"measured (cpu f32 matmul, n={_PROBE.value})"
  else:
    peak, src = flops.device_peak(dtype)
  return {"side": side, "times": times, "first_loss": loss, "compile_s": compile_s, "temp_bytes": temp,
          "peak_flops": peak,
          "peak_source": src, "device": f"{jax.device_count()} device(s) {jax.devices()[0].device_kind}"}


def cpu_mode():
  import numpy as np
  from slm_jax.train import flops
  if _SIDE.value != "both":
    print(json.dumps(run_side(_SIDE.value)), flush=True)
    return
  cfg = _cpu_config()
  T, B, steps, dtype = _cpu_shape()
  tokens = B * T
  fpt = flops.flops_per_token(cfg, T)
  load = os.getloadavg()[0]
  print(f"model: hidden {cfg.hidden_size}, intermediate {cfg.intermediate_size}, {cfg.num_hidden_layers} layers, "
        f"{cfg.num_attention_heads}/{cfg.num_key_value_heads} heads, vocab {cfg.vocab_size}, tied; "
        f"{cfg.num_params() / 1e6:.1f}M params; batch {B} x {T}, {dtype}; {fpt / 1e9:.3f} GFLOP/token; "
        f"{os.cpu_count()} cores; {_ROUNDS.value} rounds x {steps} timed steps per side", flush=True)
  passed = [flags.FLAGS[h.name].serialize() for h in globals().values()  # this bench's flags as given
            if isinstance(h, flags.FlagHolder) and h.present and h.name not in _PARENT_ONLY]
  if _BASELINE.value:  # this tree's jax side against another tree's, on the same weights
    sides, torch_on = ("jax", "baseline"), False
    passed.append("--notorch")
  else:
    sides, torch_on = (("jax", "torch") if _TORCH.value else ("jax",)), _TORCH.value
  runs = {s: [] for s in sides}
  for r in range(_ROUNDS.value):
    for side in sides:
      tree = os.path.abspath(_BASELINE.value) if side == "baseline" else ROOT
      args = [sys.executable, os.path.abspath(__file__), f"--side={'jax' if side == 'baseline' else side}", *passed]
      env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=tree + os.pathsep + os.environ.get("PYTHONPATH", ""))
      out = subprocess.run(args, capture_output=True, text=True, env=env)
      if out.returncode:
        raise SystemExit(f"round {r + 1}: the {side} side failed ({' '.join(args[1:])}):\n{out.stderr[-3000:]}")
      res = json.loads(out.stdout.strip().splitlines()[-1])
      runs[side].append(res)
      extra = (f", compile {res['compile_s']:.1f} s, matmul {res['peak_flops'] / 1e9:.0f} GFLOP/s"
               + (f", temp {res['temp_bytes'] / 1e6:.1f} MB" if res.get("temp_bytes") else "")
               if side != "torch" else "")
      print(f"round {r + 1} {side:5s}: " + " ".join(f"{t:.3f}" for t in res["times"]) + f" s per step, first loss "
            f"{res['first_loss']:.5f}{extra}", flush=True)
  other = "baseline" if _BASELINE.value else "torch"
  if other in runs:  # the same weights and batch: the first losses must agree
    np.testing.assert_allclose([x["first_loss"] for x in runs["jax"]], [x["first_loss"] for x in runs[other]],
                               rtol=1e-4, err_msg=f"jax and {other} first losses differ (not the same step?)")
  t_jax = statistics.median([t for res in runs["jax"] for t in res["times"]])
  peaks = [res["peak_flops"] for res in runs["jax"] if res["peak_flops"]]
  peak = statistics.median(peaks) if peaks else None
  j_tps = tokens / t_jax
  mfu = j_tps * fpt / peak if peak else None
  first = runs["jax"][0]
  print(f"jax:   {j_tps:9.1f} tokens/s  step {t_jax:.3f} s (median of {len(runs['jax']) * steps}; compile "
        f"{statistics.median([x['compile_s'] for x in runs['jax']]):.1f} s)  {j_tps * fpt / 1e9:.1f} GFLOP/s  MFU "
        f"{'unknown' if mfu is None else f'{100 * mfu:.1f}%'} of measured matmul peak (median "
        f"{(peak or float('nan')) / 1e9:.0f}, range {min(peaks or [0]) / 1e9:.0f}-{max(peaks or [0]) / 1e9:.0f} "
        f"GFLOP/s; {first['device']})  first loss {first['first_loss']:.5f}", flush=True)
  result = {"jax_tokens_per_s": j_tps, "jax_step_s": t_jax, "jax_mfu": mfu, "flops_per_token": fpt,
            "peak_flops": peak, "peak_flops_range": [min(peaks), max(peaks)] if peaks else None,
            "rounds": _ROUNDS.value, "steps_per_round": steps, "tokens_per_step": tokens,
            "jax_round_medians": [statistics.median(x["times"]) for x in runs["jax"]], "load_average": load}
  if _BASELINE.value:
    t_base = statistics.median([t for res in runs["baseline"] for t in res["times"]])
    temps = [res.get("temp_bytes") for res in runs["baseline"][:1] + runs["jax"][:1]]
    print(f"baseline ({_BASELINE.value}): step {t_base:.3f} s (median of {len(runs['baseline']) * steps}); this tree "
          f"{t_jax:.3f} s; ratio this / baseline step time {t_jax / t_base:.3f}", flush=True)
    result.update(baseline_step_s=t_base, step_ratio_vs_baseline=t_jax / t_base,
                  baseline_round_medians=[statistics.median(x["times"]) for x in runs["baseline"]],
                  temp_bytes={"baseline": temps[0], "this": temps[1]})
  if torch_on:
    t_torch = statistics.median([t for res in runs["torch"] for t in res["times"]])
    t_tps = tokens / t_torch
    tr = runs["torch"][0]
    print(f"torch: {t_tps:9.1f} tokens/s  step {t_torch:.3f} s (median of {len(runs['torch']) * steps}; torch "
          f"{tr['torch_version']}, {tr['torch_threads']} threads)  {t_tps * fpt / 1e9:.1f} GFLOP/s  "
          f"first loss {tr['first_loss']:.5f}", flush=True)
    result.update(torch_tokens_per_s=t_tps, torch_step_s=t_torch, ratio=j_tps / t_tps,
                  torch_round_medians=[statistics.median(x["times"]) for x in runs["torch"]],
                  jax_first_loss=first["first_loss"], torch_first_loss=tr["first_loss"])
    print(f"ratio jax / torch: {j_tps / t_tps:.2f}", flush=True)
  print(f"load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end", flush=True)
  print(json.dumps(result), flush=True)


def gpu_mode():
  from slm_jax import console
  console.setup()  # what every tool does first
  import jax
  from slm_jax.model.config import preset
  from slm_jax.train import flops
  t0 = time.time()
  T = _SEQ.value or 2048
  dtype = _DTYPE.value or "bfloat16"
  precision = _PRECISION.value or ("bf16" if dtype == "bfloat16" else "fp32")
  batches = [int(b) for b in (_BATCH.value or ["4", "8", "16"])]
  steps = _STEPS.value or 10
  cfg = preset(_PRESET.value, attention_impl=_ATTN.value, dtype=dtype)
  dev = jax.devices()[0]
  fpt = flops.flops_per_token(cfg, T)
  peak = flops.peak_flops(dev.device_kind, dtype)
  print(f"{_PRESET.value}: {cfg.num_params() / 1e9:.3f}B params, seq {T}, {dtype} compute, precision {precision}, "
        f"attention {_ATTN.value}; {fpt / 1e9:.2f} GFLOP/token; device {dev.device_kind} ({dev.platform}), "
        f"peak {'unknown' if peak is None else f'{peak / 1e12:.0f} TFLOP/s'}; jax {jax.__version__}", flush=True)
  js = JaxStep(cfg, precision)
  print(f"params + AdamW state created in {time.time() - t0:.1f} s", flush=True)
  results, fitted = [], set()

  def run(b, remat, packed):
    nonlocal js
    name = f"batch {b:3d} remat {'on ' if remat else 'off'} {'packed' if packed else 'causal'}"
    if time.time() - t0 > _MAX_S.value:
      print(f"{name}: skipped (past --max_seconds={_MAX_S.value:.0f})", flush=True)
      return
    try:
      if not js.alive():  # a failed step may have consumed the donated state
        js = JaxStep(cfg, precision)
      times, compile_s, loss = js.time(_batch(b, T, cfg.vocab_size, packed), remat, packed, steps, _WARMUP.value)
      step_s = statistics.median(times)
      tps = b * T / step_s
      tflops = tps * fpt / 1e12
      mfu = tps * fpt / peak if peak else None
      results.append({"batch": b, "remat": remat, "packed": packed, "tokens_per_s": tps, "step_s": step_s,
                      "tflops_per_device": tflops, "mfu": mfu, "compile_s": compile_s, "loss": loss})
      fitted.add((b, packed))
      print(f"{name}: {tps:9.0f} tokens/s  {tflops:6.1f} TFLOP/s  MFU "
            f"{'unknown' if mfu is None else f'{100 * mfu:.1f}%'}  step {step_s * 1e3:.0f} ms  compile "
            f"{compile_s:.0f} s  first loss {loss:.3f}", flush=True)
    except Exception as e:  # OOM or a failed attention path: report and go on
      msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
      print(f"{name}: FAILED {type(e).__name__}: {msg}", flush=True)
      results.append({"batch": b, "remat": remat, "packed": packed, "error": f"{type(e).__name__}: {msg}"})
    gc.collect()

  remats = {"auto": [False, True], "on": [True], "off": [False]}[_REMAT.value]
  first = [False] if _PACKED.value != "on" else [True]
  for packed in first:  # every batch size without remat, then with remat those that did not fit
    for remat in remats:
      for b in batches:
        if not (remat and _REMAT.value == "auto" and (b, packed) in fitted):
          run(b, remat, packed)
  if _PACKED.value == "both":  # packed rows (masked attention) at the best causal setting
    done = [r for r in results if "tokens_per_s" in r]
    if done:
      top = max(done, key=lambda r: r["tokens_per_s"])
      run(top["batch"], top["remat"], True)
  ok = [r for r in results if "tokens_per_s" in r]
  best = max(ok, key=lambda r: r["tokens_per_s"]) if ok else None
  best_causal = max((r for r in ok if not r["packed"]), key=lambda r: r["tokens_per_s"], default=None)
  best_packed = max((r for r in ok if r["packed"]), key=lambda r: r["tokens_per_s"], default=None)
  print(json.dumps({"preset": _PRESET.value, "device": dev.device_kind, "seq_len": T, "dtype": dtype,
                    "precision": precision, "attention_impl": _ATTN.value, "flops_per_token": fpt,
                    "peak_flops": peak, "best": best, "best_causal": best_causal, "best_packed": best_packed,
                    "all": results, "seconds": time.time() - t0}), flush=True)


def main(argv):
  del argv
  if _PRESET.value:
    gpu_mode()
  else:
    cpu_mode()


if __name__ == "__main__":
  app.run(main)
