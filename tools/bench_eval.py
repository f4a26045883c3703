"""Evaluation throughput against transformers (torch) on the same model, weights and CPU/GPU.

  python tools/bench_eval.py [--pairs=1000] [--hf_dir=SMOLLM2_DIR] [--threads=0] [--gen_batch=8] [--gen_new=150]

1. Scoring: a sWUGGY-shaped set (`--pairs` pairs, BOS + 6..30 units each) scored with mean log-probability.
   Ours: slm_jax.eval.scoring.Scorer (length buckets, one compile per bucket). torch: batches of
   `--torch_batch` padded to their longest item with an attention mask, full logits, log_softmax, once in file
   order as slamkit's `modelling_metric` does and once sorted by length; the faster torch variant is the baseline.
2. Generation: `--gen_batch` prompts of 30..75 units, `--gen_new` new tokens, SIMS sampling (temperature 0.8,
   top-k 25), text ids banned. Ours: the compiled KV-cache loop; torch: `model.generate` (KV cache, left padding,
   `suppress_tokens` for the same ban, `min_new_tokens` so that both produce the same count).
Times exclude compilation / warm-up (both sides run once first); cold times are printed too.
"""
import json
import os
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("pairs", 1000, "sWUGGY-shaped pairs to score.")
flags.DEFINE_string("hf_dir", None, "Use this HF Llama/Qwen2 folder (fp32) instead of the random bench model.")
flags.DEFINE_integer("threads", 0, "torch threads (0: torch's default, all cores).")
flags.DEFINE_integer("torch_batch", 32, "torch scoring batch size.")
flags.DEFINE_integer("tokens_per_batch", 8192, "Our scoring tokens per step.")
flags.DEFINE_integer("max_buckets", 4, "Our length buckets (one compile each).")
flags.DEFINE_integer("granule", 8, "Our bucket lengths are multiples of this.")
flags.DEFINE_integer("gen_batch", 8, "Prompts generated together.")
flags.DEFINE_integer("gen_new", 150, "New tokens per prompt.")
flags.DEFINE_integer("seed", 0, "Data / weights seed.")
flags.DEFINE_integer("num_layers", 6, "Layers of the random bench model (fewer: a quick smoke run).")
flags.DEFINE_string("out", None, "Write the numbers as JSON here.")

UNITS = 500


def bench_config():
  """SmolLM2-style small Llama (tied, rope 1e5) with the extended vocabulary of SmolLM2 (49152 + 502)."""
  from slm_jax.model.config import ModelConfig
  return ModelConfig("llama", 49152 + UNITS + 2, 384, 1024, FLAGS.num_layers, 6, 2, 64, 1e-5, 100000.0, None, 8192,
                     True, False, 1, 2)


def torch_model(cfg, hf_dir, seed):
  import torch
  import transformers
  if hf_dir:
    return transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  torch.manual_seed(seed)
  m = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg.to_hf_dict(dtype="float32"))).eval()
  with torch.no_grad():
    for p in m.parameters():
      if p.ndim >= 2:
        p.normal_(0, 0.05)
  return m


def torch_scores(tm, seqs, batch, order):
  import torch
  out = [None] * len(seqs)
  with torch.inference_mode():
    for s in range(0, len(order), batch):
      idx = order[s:s + batch]
      T = max(len(seqs[i]) for i in idx)
      ids = torch.zeros(len(idx), T, dtype=torch.long)
      mask = torch.zeros(len(idx), T, dtype=torch.long)
      for r, i in enumerate(idx):
        ids[r, :len(seqs[i])] = torch.as_tensor(seqs[i])
        mask[r, :len(seqs[i])] = 1
      logits = tm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
      lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
      m = mask[:, 1:].float()
      mean = (lp * m).sum(-1) / m.sum(-1)
      for r, i in enumerate(idx):
        out[i] = float(mean[r])
  return out


def main(argv):
  del argv
  from slm_jax import console
  console.setup()  # what every tool does first
  import jax
  import numpy as np
  import torch

  from slm_jax import sharding
  from slm_jax.checkpoint.hf_import import from_torch_state_dict
  from slm_jax.eval.generate import Generator, SamplingConfig
  from slm_jax.eval.scoring import Scorer, modality_banned
  from slm_jax.model.config import ModelConfig
  from slm_jax.vocab import VocabLayout

  if FLAGS.threads:
    torch.set_num_threads(FLAGS.threads)
  cfg = ModelConfig.from_hf_dir(FLAGS.hf_dir) if FLAGS.hf_dir else bench_config()
  tm = torch_model(cfg, FLAGS.hf_dir, FLAGS.seed)
  mesh = sharding.make_mesh(fsdp=1, devices=jax.devices()[:1])
  model = from_torch_state_dict(cfg, tm.state_dict(), mesh)
  # units are the last 502 ids (for an HF text LM folder, its last ids stand in for them)
  layout = VocabLayout(base_size=cfg.vocab_size - UNITS - 2, num_units=UNITS, bos_id=1, eos_id=2)
  rng = np.random.RandomState(FLAGS.seed)
  seqs = [np.concatenate([[layout.bos_id], rng.randint(0, UNITS, rng.randint(6, 31)) + layout.unit_offset])
          for _ in range(2 * FLAGS.pairs)]
  info = {"device": str(jax.devices()[0]), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
          "model": FLAGS.hf_dir or "random SmolLM2-style llama", "params": cfg.num_params(),
          "pairs": FLAGS.pairs, "tokens": int(sum(len(s) for s in seqs))}
  print(json.dumps(info))

  # ---- scoring
  scorer = Scorer(model, mesh, tokens_per_batch=FLAGS.tokens_per_batch, max_buckets=FLAGS.max_buckets,
                  granule=FLAGS.granule)
  t = time.perf_counter(); ours = scorer.score(seqs); cold = time.perf_counter() - t
  t = time.perf_counter(); ours = scorer.score(seqs); warm = time.perf_counter() - t
  file_order = list(range(len(seqs)))
  sorted_order = sorted(file_order, key=lambda i: len(seqs[i]))
  warm_n = min(64, len(seqs))
  torch_scores(tm, seqs[:warm_n], FLAGS.torch_batch, list(range(warm_n)))  # warm-up
  t = time.perf_counter(); ref = torch_scores(tm, seqs, FLAGS.torch_batch, file_order); t_file = time.perf_counter() - t
  t = time.perf_counter(); torch_scores(tm, seqs, FLAGS.torch_batch, sorted_order); t_sorted = time.perf_counter() - t
  diff = float(np.max(np.abs(np.asarray(ref) - ours.scores)))
  best_torch = min(t_file, t_sorted)
  scoring = {"ours_pairs_per_s": FLAGS.pairs / warm, "ours_cold_s": cold, "ours_warm_s": warm,
             "torch_file_order_pairs_per_s": FLAGS.pairs / t_file, "torch_sorted_pairs_per_s": FLAGS.pairs / t_sorted,
             "speedup_vs_best_torch": best_torch / warm, "max_abs_score_diff": diff, "buckets": ours.buckets,
             "padding_fraction": 1 - ours.real_tokens / ours.padded_tokens}
  print(json.dumps({"scoring": scoring}))

  # ---- generation
  B, N = FLAGS.gen_batch, FLAGS.gen_new
  prompts = [np.concatenate([[layout.bos_id], rng.randint(0, UNITS, rng.randint(30, 76)) + layout.unit_offset])
             for _ in range(B)]
  banned = modality_banned(layout, cfg.padded_vocab_size, "speech")
  sc = SamplingConfig(max_new_tokens=N, temperature=0.8, top_k=25)
  gen = Generator(model, mesh)
  t = time.perf_counter(); gen.generate(prompts, sc, banned=banned, seed=0); g_cold = time.perf_counter() - t
  t = time.perf_counter(); out = gen.generate(prompts, sc, banned=banned, seed=1); g_warm = time.perf_counter() - t
  assert all(len(x) == N for x in out.tokens)
  P = max(len(p) for p in prompts)
  ids = torch.zeros(B, P, dtype=torch.long)
  att = torch.zeros(B, P, dtype=torch.long)
  for r, p in enumerate(prompts):
    ids[r, P - len(p):] = torch.as_tensor(p)
    att[r, P - len(p):] = 1
  suppress = np.flatnonzero(banned[:cfg.vocab_size]).tolist()
  kw = dict(attention_mask=att, max_new_tokens=N, min_new_tokens=N, do_sample=True, temperature=0.8, top_k=25,
            suppress_tokens=suppress, pad_token_id=0)
  with torch.inference_mode():
    tm.generate(ids, **{**kw, "max_new_tokens": 8, "min_new_tokens": 8})  # warm-up
    t = time.perf_counter(); tout = tm.generate(ids, **kw); t_gen = time.perf_counter() - t
  new = tout[:, P:]
  assert new.shape[1] == N and bool(((new >= layout.unit_offset) & (new < layout.speech_id)).all())
  generation = {"batch": B, "new_tokens": N, "ours_tokens_per_s": B * N / g_warm, "ours_cold_s": g_cold,
                "ours_warm_s": g_warm, "torch_tokens_per_s": B * N / t_gen, "speedup_vs_torch": t_gen / g_warm}
  print(json.dumps({"generation": generation}))
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump({"info": info, "scoring": scoring, "generation": generation}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
