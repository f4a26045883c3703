"""Demo scaling sweep: 3 tiny Llama-shaped models x 3 token budgets trained from scratch on data/demo (CPU).

  python tools/sweep.py --config=configs/scaling_demo.py --out_dir=runs/scaling_demo --launch=local
  python tools/fit_scaling.py --runs=runs/scaling_demo/runs.csv --out_dir=runs/scaling_demo/fit
Variant `synthetic` trains on the in-memory synthetic stream (no data files; for smoke tests).
"""
import ml_collections

DEMO_EVAL = "data/demo/eval"
# name -> ModelConfig overrides of configs/demo.py's tiny-llama (heads x head_dim = hidden)
SIZES = {
    "s": dict(hidden_size=32, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8),
    "m": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16),
    "l": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=32),
}


def get_config(arg: str | None = None):
  if arg not in (None, "", "synthetic"):
    raise ValueError(f"unknown variant {arg!r} of scaling_demo.py (known: synthetic)")
  c = ml_collections.ConfigDict()
  c.train_config = "configs/demo.py" + (":synthetic" if arg == "synthetic" else "")
  # every run: no intermediate checkpoints (the final one is always written), quiet logs
  c.overrides = dict(checkpoint_every=0, log_every=25, tensorboard=False, eval_batches=8)
  c.models = {name: {"model": {"overrides": dict(o)}} for name, o in SIZES.items()}
  c.token_budgets = (4e4, 8e4, 1.6e5)     # label tokens; steps = budget / (8 x 256) / label_fraction
  c.label_fraction = 1.0
  c.evals = [] if arg == "synthetic" else [
      {"benchmark": "sblimp", "data_dir": f"{DEMO_EVAL}/sblimp", "args": []},
      {"benchmark": "tsc", "data_dir": f"{DEMO_EVAL}/tsc", "args": []},
  ]
  c.slurm = dict(nodes=1, time="01:00:00")
  return c
