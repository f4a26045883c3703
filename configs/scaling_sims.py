"""The SIMS scaling study (docs/reference.md §7, §8): Qwen2.5 0.5B-7B and Llama-3.2 1B/3B, TWIST-initialised, x token budgets.

  python tools/sweep.py --config=configs/scaling_sims.py:/models --out_dir=/scratch/sims_scaling --launch=slurm
  bash /scratch/sims_scaling/slurm/submit_all.sh
  python tools/sweep.py --config=configs/scaling_sims.py:/models --out_dir=/scratch/sims_scaling --launch=none
  python tools/fit_scaling.py --runs=/scratch/sims_scaling/runs.csv --out_dir=/scratch/sims_scaling/fit

The variant argument is the folder holding the Hugging Face checkpoints (Qwen2.5-0.5B, ..., Llama-3.2-3B).
Budgets span the paper's 2e20-FLOP comparison (7.6B on ~4.4e9 tokens, 3B on ~11e9, 1.5B on ~22e9);
`--config.token_budgets="(1e9,2e9)"` and `--config.models.<name>.init.path=...` override from the command line.
"""
import ml_collections

QWEN = "configs/sims_qwen2_5.py"
LLAMA = "configs/sims_llama3_2_3b.py"
EVAL = "data/eval"  # ZeroSpeech 2021 lexical / syntactic, spoken and topic StoryCloze, with units.jsonl each


def get_config(arg: str | None = None):
  root = arg or "/models"
  c = ml_collections.ConfigDict()
  c.train_config = f"{QWEN}:0.5b"
  c.overrides = dict(keep_every=0)
  # names are ConfigDict keys (no dots): run names are <model>_<budget>, e.g. qwen0p5b_4.4e9
  c.models = {
      "qwen0p5b": dict(train_config=f"{QWEN}:0.5b", init=dict(path=f"{root}/Qwen2.5-0.5B")),
      "qwen1p5b": dict(train_config=f"{QWEN}:1.5b", init=dict(path=f"{root}/Qwen2.5-1.5B")),
      "qwen3b": dict(train_config=f"{QWEN}:3b", init=dict(path=f"{root}/Qwen2.5-3B")),
      "qwen7b": dict(train_config=f"{QWEN}:7b", init=dict(path=f"{root}/Qwen2.5-7B")),
      "llama1b": dict(train_config=LLAMA, model=dict(preset="llama3.2-1b"),
                      init=dict(path=f"{root}/Llama-3.2-1B")),
      "llama3b": dict(train_config=LLAMA, init=dict(path=f"{root}/Llama-3.2-3B")),
  }
  c.token_budgets = (2.2e9, 4.4e9, 11e9, 22e9)
  c.label_fraction = 0.99  # packed 2048-token rows: only each document's first token is not a label
  c.evals = [
      {"benchmark": "swuggy", "data_dir": f"{EVAL}/lexical", "args": ["--split=dev"]},
      {"benchmark": "sblimp", "data_dir": f"{EVAL}/syntactic", "args": ["--split=dev"]},
      {"benchmark": "ssc", "data_dir": f"{EVAL}/sSC", "args": []},
      {"benchmark": "tsc", "data_dir": f"{EVAL}/tSC", "args": []},
  ]
  c.slurm = dict(nodes=1, gpus_per_node=8, cpus_per_task=32, time="72:00:00", partition="", account="",
                 extra=[], setup=["source .venv/bin/activate"])
  return c
