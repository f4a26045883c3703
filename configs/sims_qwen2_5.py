"""SIMS recipe (docs/reference.md §5) on Qwen2.5: `--config=configs/sims_qwen2_5.py:7b` (variants 0.5b, 1.5b, 3b, 7b).

TWIST init from the HF folder (`--config.init.path`); Qwen2.5-7B has an untied head, the smaller ones tie it.
Token budgets: 7B is the published SIMS-7B run (15e9 tokens, docs/reference.md §7); the others default to one pass over the
SIMS dataset (11.08e9 tokens) — scaling sweeps override `--config.token_budget`.
"""
from slm_jax.train.config_base import base_config, finalize

# preset, token budget, micro-batches per step (memory), tensor parallelism, remat + scanned layers.
# 7b is planned for a TPU v5p-8 (4 chips x 95 GB) and fits a v5e-32 too (memory plan in BENCHMARKS.md,
# tools/aot_compile.py); the smaller ones for one 8-device host (GPU node or TPU v5e-8).
VARIANTS = {
    "0.5b": ("qwen2.5-0.5b", 11.08e9, 1, 1, False),
    "1.5b": ("qwen2.5-1.5b", 11.08e9, 1, 1, False),
    "3b": ("qwen2.5-3b", 11.08e9, 1, 1, True),
    "7b": ("qwen2.5-7b", 15e9, 2, 1, True),
}


def get_config(arg: str | None = None):
  if arg not in VARIANTS:
    raise ValueError(f"sims_qwen2_5.py needs a variant: one of {', '.join(VARIANTS)} (got {arg!r})")
  name, budget, micro, tensor, remat = VARIANTS[arg]
  c = base_config()
  c.model.preset = name
  c.init.kind = "hf"
  c.data.sources.interleaved = "data/prepared/interleaved"
  c.data.sources.speech = "data/prepared/speech"
  c.data.sources.text = "data/prepared/text"
  c.seq_len = 2048
  c.global_batch_size = 64
  c.micro_batches = micro
  c.mesh.tensor = tensor
  c.model.remat = c.model.scan_layers = remat
  c.precision = "bf16"
  c.token_budget = budget
  c.log_every = 50
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.keep_last = 2
  c.keep_every = 10000
  return finalize(c)
