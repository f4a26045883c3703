"""SLAM (speech-only, one-GPU recipe, docs/reference.md §5): Qwen2.5-0.5B with rope theta 10000, its own 502-token vocabulary
(PAD 0, <S> 1 as BOS/EOS, <Un i> = i + 2; the first 502 rows of Qwen's embedding kept, as slamkit's
resize_token_embeddings does), context 1024, lr 1e-3, warmup max(100 steps, 1%), cosine to 5e-5, clip 0.5,
batch 8 x 16 accumulation, 17,625 steps.

  tools/train.py --config=configs/slam_qwen2_5_0_5b.py --workdir=runs/slam --config.init.path=/models/Qwen2.5-0.5B
"""
from slm_jax.train.config_base import base_config, finalize


def get_config(arg: str | None = None):
  c = base_config()
  c.model.preset = "qwen2.5-0.5b"
  c.model.vocab_size = 502
  c.model.overrides.rope_theta = 10000.0
  c.init.kind = "hf"
  c.vocab.layout = "slam"
  c.vocab.num_units = 500
  c.data.sources.speech = "data/prepared/speech"
  c.data.weights = {"speech": 1.0}
  c.seq_len = 1024
  c.global_batch_size = 128
  c.micro_batches = 16
  # planned for one TPU v5e chip (16 GB; 8 sequences per micro-batch as slamkit's per-GPU batch) and a
  # v5e-4 (the micro-batch is split over the chips): memory plan in BENCHMARKS.md, tools/aot_compile.py
  c.model.remat = True
  c.model.scan_layers = True
  c.precision = "bf16"
  c.optim.lr = 1e-3
  c.optim.min_lr = 5e-5
  c.optim.warmup_frac = 0.01
  c.optim.warmup_min_steps = 100
  c.optim.clip_norm = 0.5
  c.total_steps = 17625
  c.log_every = 50
  c.eval_every = 1000
  c.checkpoint_every = 1000
  if arg:
    raise ValueError(f"slam_qwen2_5_0_5b.py has no variants (got {arg!r})")
  return finalize(c)
