"""SIMS recipe (docs/reference.md §5) on Llama-3.2-3B: TWIST init, interleaved + speech-only + text-only mix, packed 2048.

  tools/train.py --config=configs/sims_llama3_2_3b.py --workdir=runs/sims3b \
      --config.init.path=/models/Llama-3.2-3B            # HF folder (grown to 128758 ids on the fly)
  # or an Orbax checkpoint from tools/convert_hf_to_orbax.py: --config.init.kind=orbax --config.init.path=DIR

Variant `runlocal` shrinks batch and steps for a smoke run on one machine.
"""
from slm_jax.train.config_base import base_config, finalize


def get_config(arg: str | None = None):
  c = base_config()
  c.model.preset = "llama3.2-3b"         # only used by init.kind=random
  c.init.kind = "hf"
  c.data.sources.interleaved = "data/prepared/interleaved"
  c.data.sources.speech = "data/prepared/speech"
  c.data.sources.text = "data/prepared/text"
  c.seq_len = 2048
  # slamkit's scaling_interleaving.yaml: 8 sequences per GPU, no accumulation; 64 = 8 GPUs x 8
  c.global_batch_size = 64
  c.precision = "bf16"
  # planned for a TPU v5e-8 (8 chips x 16 GB; see the memory plan in BENCHMARKS.md, tools/aot_compile.py):
  # parameters and AdamW state sharded 8 ways (fsdp), layers scanned and rematerialised, 2 micro-batches.
  # On 8 x A100-80GB (the paper's node) --config.micro_batches=1 fits as well.
  c.micro_batches = 2
  c.model.remat = True
  c.model.scan_layers = True
  # one pass over the SIMS dataset (11.08e9 tokens); the cosine schedule is sized to it
  c.token_budget = 11.08e9
  c.log_every = 50
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.keep_last = 2
  c.keep_every = 10000
  if arg == "runlocal":
    c.global_batch_size, c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 8, 20, 1, 10, 10
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of sims_llama3_2_3b.py (known: runlocal)")
  return finalize(c)
