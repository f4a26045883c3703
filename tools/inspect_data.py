"""Prints the first documents of a prepared folder as the model sees them (docs/reference.md §4 string form), one per line.

  tools/inspect_data.py --data_dir=data/inter --num=5 --seed=0 --epoch=0

Interleaved documents are drawn for (--seed, --epoch) exactly as the training pipeline draws them; newlines
inside text are shown as \\n so that each document stays on one line.
"""
from absl import app, flags

from slm_jax import console

_DIR = flags.DEFINE_string("data_dir", None, "Prepared dataset folder (tools/prepare_data.py output).")
_NUM = flags.DEFINE_integer("num", 10, "Number of documents.")
_START = flags.DEFINE_integer("start", 0, "Index of the first document.")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "validation"], "Split.")
_SEED = flags.DEFINE_integer("seed", 0, "Interleaving seed (the training seed).")
_EPOCH = flags.DEFINE_integer("epoch", 0, "Epoch (per_epoch mode draws a new pattern each epoch).")
_MODE = flags.DEFINE_enum("interleave_mode", "per_epoch", ["per_epoch", "static"], "Interleaving mode.")
flags.mark_flags_as_required(["data_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.setup()  # absl / Orbax / JAX INFO hidden unless --verbosity is given
  from slm_jax.data import tokenise
  for s in tokenise.document_strings(_DIR.value, split=_SPLIT.value, num=_NUM.value, start=_START.value,
                                     seed=_SEED.value, epoch=_EPOCH.value, mode=_MODE.value):
    print(s.replace("\\", "\\\\").replace("\n", "\\n"), flush=True)


if __name__ == "__main__":
  app.run(main)
