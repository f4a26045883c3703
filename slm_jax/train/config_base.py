"""The training config schema shared by every file in configs/ (ml_collections, locked after get_config).

Every key a run reads is declared here with its default, so `--config.key=value` overrides are type-checked
and typos fail loudly. Recipes in configs/ change values, never add keys.
"""
from __future__ import annotations

import ml_collections

from slm_jax.data.pipeline import SIMS_MIX_WEIGHTS

# SIMS per-document mixing (docs/reference.md §3): equal token counts from the three kinds


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  # model: init.kind='random' builds `preset`; hf / orbax inits take the structure from the checkpoint
  c.model = ml_collections.ConfigDict(dict(
      preset="llama3.2-3b",
      vocab_size=-1,            # -1: from the vocabulary layout / checkpoint; smaller keeps the first rows (SLAM)
      attention_impl="auto",    # auto (TPU: splash, GPU: cudnn in bf16, else xla) | xla | cudnn | splash
      remat=False,              # recompute each layer in the backward pass
      remat_policy="nothing_saveable",  # with remat, what the backward pass may keep (model.config.REMAT_POLICIES)
      scan_layers=False,        # layers stored stacked [L, ...] and run as one lax.scan (one layer body to compile)
      overrides=ml_collections.ConfigDict()))  # ModelConfig fields to replace (e.g. rope_theta)

  # TWIST initialisation: a HF folder (grown to the speech-text vocabulary on the fly) or an Orbax
  # checkpoint from tools/convert_hf_to_orbax.py; 'random' for the demo and tests
  c.init = ml_collections.ConfigDict(dict(kind="hf", path="", step=-1))

  # vocabulary: the base tokenizer (defaults to the one in init.path) extended by num_units units + 2 markers;
  # layout='slam' is the 502-token speech-only vocabulary; base_size names a tokenizer-less layout (synthetic)
  c.vocab = ml_collections.ConfigDict(dict(tokenizer="", num_units=500, layout="", base_size=0))

  c.data = ml_collections.ConfigDict(dict(
      kind="pipeline",          # pipeline | synthetic | preference (pairs for objective='dpo')
      sources=ml_collections.ConfigDict({"interleaved": "", "speech": "", "text": "", "preference": ""}),
      weights=ml_collections.ConfigDict(dict(SIMS_MIX_WEIGHTS)),
      interleave_mode="per_epoch",
      num_workers=0,
      num_epochs=ml_collections.config_dict.placeholder(int)))  # None: repeat forever

  c.objective = "lm"            # what the step optimises (train/objectives.py): lm (next-token pre-training, train/lm.py)
  # objective='dpo' (slm_jax/train/dpo/): trl's DPO as slamkit's Slam recipe runs it; global_batch_size = rows, 2 a pair
  c.dpo = ml_collections.ConfigDict(dict(
      beta=0.1, loss_type="sigmoid",  # sigmoid | ipo
      label_smoothing=0.0,      # > 0: conservative DPO (sigmoid loss)
      reference="model",        # model: frozen copy of the init in memory | precomputed: a first pass stores them
      max_prompt_len=0,         # prompts keep their last tokens; 0: seq_len // 2
      shared_prompt=False))     # True: one row per pair, prompt computed once (same loss; continuations cut to
                                # seq_len + 1 - max_prompt_len tokens); needs attention_impl xla, cudnn or auto
  c.seq_len = 2048
  c.global_batch_size = 64      # sequences per optimizer step, over all devices and micro-batches
  c.micro_batches = 1           # gradient accumulation steps inside one jit'd step
  c.loss_chunk = 512            # positions per chunk of fp32 logits (CPU: 128 is faster, chunks stay in cache)
  c.fused_loss = True           # loss gradient formed in the forward pass (no logits recompute); False: autodiff
  c.precision = "bf16"          # bf16 (slamkit: bf16 weights + AdamW state) | mixed (fp32 master) | fp32
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))

  # docs/reference.md §5 optimisation
  c.optim = ml_collections.ConfigDict(dict(
      lr=5e-4, min_lr=5e-5, warmup_frac=0.01, warmup_min_steps=0, b1=0.9, b2=0.999, eps=1e-8,
      weight_decay=0.0, clip_norm=0.5))

  # run control: the first limit reached stops the run (0 = unset); the schedule spans the shorter
  c.total_steps = 0
  c.token_budget = 0.0          # label tokens trained on
  c.max_wall_s = 0.0            # wall-clock seconds of this invocation

  c.log_every = 50
  c.eval_every = 1000           # 0: no validation
  c.eval_batches = 50
  c.checkpoint_every = 1000
  c.keep_last = 3
  c.keep_every = 0              # also keep every keep_every-th step (0: none)
  c.async_checkpoint = True
  c.tensorboard = True
  c.inject_nan_at_step = 0      # > 0: NaN loss at this step (tests the non-finite stop)
  return c


def finalize(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c.lock()
  return c
