"""DPO demo: the demo model (configs/demo.py, trained by `bash tools/launch/demo.sh runs/demo`) tuned on spoken
preference pairs made from the demo speech (data/demo/prepared/preference, `tools/make_demo_preferences.py`:
chosen = the utterance's true continuation, rejected = another utterance's), a few minutes on 2 CPU cores. The
reward accuracy on the training pairs rises as the policy learns them; on the 16 held-out pairs this small
stand-in-unit model stays near chance.

  tools/train.py --config=configs/dpo_demo.py --workdir=runs/dpo_demo [--config.init.path=runs/demo/checkpoints]
Variant `tiny` (tests): a 2-layer random model with the 502-token speech vocabulary on the same pairs, cut short.
"""
from slm_jax.train.config_base import base_config, finalize


def get_config(arg: str | None = None):
  c = base_config()
  c.objective = "dpo"
  c.dpo.beta = 0.1
  c.dpo.reference = "model"
  c.init.kind = "orbax"
  c.init.path = "runs/demo/checkpoints"     # latest step of the demo run; structure and tokenizer come with it
  c.data.kind = "preference"
  c.data.sources.preference = "data/demo/prepared/preference"
  c.seq_len = 128                           # prompts keep their last 64 tokens, continuations cut to fit
  c.dpo.max_prompt_len = 64
  c.global_batch_size = 16                  # rows: 8 pairs
  c.precision = "fp32"
  c.loss_chunk = 128
  c.optim.lr = 5e-4
  c.optim.min_lr = 5e-4
  c.optim.warmup_frac = 0.0
  c.optim.warmup_min_steps = 5
  c.total_steps = 48                        # ~3.7 epochs of the 103 training pairs
  c.log_every = 4
  c.eval_every = 16
  c.eval_batches = 2                        # the 16 validation pairs
  c.checkpoint_every = 16
  c.keep_last = 2
  if arg == "tiny":
    c.init.kind, c.init.path, c.model.preset = "random", "", "tiny-llama"
    c.vocab.layout = "slam"
    for k, v in dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=8).items():
      c.model.overrides[k] = v
    c.seq_len, c.global_batch_size, c.total_steps, c.dpo.max_prompt_len = 48, 8, 12, 24
    c.log_every, c.eval_every, c.eval_batches, c.checkpoint_every = 1, 0, 2, 3
    c.optim.lr, c.optim.min_lr, c.optim.warmup_min_steps = 1e-3, 1e-3, 0
  elif arg not in (None, ""):
    raise ValueError(f"unknown variant {arg!r} of dpo_demo.py (known: tiny)")
  return finalize(c)
