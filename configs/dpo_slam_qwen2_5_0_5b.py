"""Preference tuning of a Slam model as slamkit's `preference_alignment_train` does it (trl DPO, sigmoid loss,
beta 0.1, lr 5e-5 held constant after 100 warmup steps: its cosine_with_min_lr has min_lr 5e-5 = lr; clip 0.5,
bf16, 8 pairs per device step, one epoch) on spoken preference pairs (e.g. SpokenSwag, prepared by
`tools/prepare_data.py --kind=preference`), from a trained SLAM checkpoint (configs/slam_qwen2_5_0_5b.py: the
502-token speech vocabulary, <S> 1 as BOS and EOS; structure and rope theta come from the checkpoint).

  tools/train.py --config=configs/dpo_slam_qwen2_5_0_5b.py --workdir=runs/slam_dpo \
      --config.init.path=runs/slam/checkpoints --config.data.sources.preference=data/prepared/preference
"""
from slm_jax.train.config_base import base_config, finalize


def get_config(arg: str | None = None):
  c = base_config()
  c.objective = "dpo"
  c.dpo.beta = 0.1
  c.dpo.loss_type = "sigmoid"
  c.dpo.reference = "model"                 # "precomputed": one model in memory
  c.init.kind = "orbax"                     # the SLAM run's checkpoints (latest step)
  c.model.preset = "qwen2.5-0.5b"           # the SLAM model's shape, for tools/aot_compile.py without the checkpoint
  c.vocab.layout = "slam"
  c.vocab.num_units = 500
  c.data.kind = "preference"
  c.data.sources.preference = "data/prepared/preference"
  c.data.num_epochs = 1                     # stops with status data_exhausted
  c.seq_len = 1024
  c.global_batch_size = 16                  # rows: 8 pairs (chosen + rejected each)
  c.precision = "bf16"
  c.optim.lr = 5e-5
  c.optim.min_lr = 5e-5
  c.optim.warmup_frac = 0.0
  c.optim.warmup_min_steps = 100
  c.optim.clip_norm = 0.5
  c.total_steps = 1_000_000                 # a cap; one epoch ends the run first
  c.log_every = 10
  c.eval_every = 500
  c.eval_batches = 20
  c.checkpoint_every = 500
  if arg:
    raise ValueError(f"dpo_slam_qwen2_5_0_5b.py has no variants (got {arg!r})")
  return finalize(c)
