"""Shared builders for the eval tests: tiny torch models with lively weights, a tiny word tokenizer, fixtures."""
from __future__ import annotations

import json
import os

import numpy as np

WORDS = ("the cat sat on mat a dog ran to park she he bought new shoes went home was happy sad it rained day "
         "store milk friend called later story ended well badly . ,").split()


def torch_model(cfg, seed: int = 0, std: float = 0.25):
  """A transformers Llama / Qwen2 with `cfg`'s shapes; weights N(0, std) so greedy outputs vary."""
  import torch
  import transformers
  hf = cfg.to_hf_dict(dtype="float32")
  cls, conf = ((transformers.LlamaForCausalLM, transformers.LlamaConfig) if cfg.arch == "llama"
               else (transformers.Qwen2ForCausalLM, transformers.Qwen2Config))
  torch.manual_seed(seed)
  model = cls(conf(**hf)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim >= 2 or name.endswith("bias"):
        p.normal_(0.0, std)
  return model


def jax_model(cfg, tm, mesh):
  from slm_jax.checkpoint.hf_import import from_torch_state_dict
  return from_torch_state_dict(cfg, tm.state_dict(), mesh)


def torch_logprobs(tm, seq, banned=None) -> np.ndarray:
  """log p(seq[1:]) under the torch model, banned ids at -inf before the softmax."""
  import torch
  with torch.no_grad():
    logits = tm(torch.tensor(np.asarray(seq)[None], dtype=torch.long)).logits[0].double()
  if banned is not None:
    logits[:, torch.tensor(np.flatnonzero(banned[:logits.shape[-1]]))] = -float("inf")
  lp = torch.log_softmax(logits, -1)[:-1]
  return lp.gather(-1, torch.tensor(np.asarray(seq)[1:, None], dtype=torch.long))[:, 0].numpy()


def word_tokenizer(folder: str):
  """A tiny word-level HF tokenizer that adds BOS `<s>`, saved to `folder` and returned."""
  from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders
  from transformers import PreTrainedTokenizerFast
  vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>"] + WORDS)}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
  tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
  os.makedirs(folder, exist_ok=True)
  fast.save_pretrained(folder)
  return fast


def speech_checkpoint(folder: str, mesh, arch: str = "llama", seed: int = 0):
  """An Orbax checkpoint (tiny model, word tokenizer + 500 units) and its loaded pieces."""
  from slm_jax.checkpoint import orbax_io
  from slm_jax.model.config import preset
  from slm_jax.vocab import extend_tokenizer
  tok = word_tokenizer(os.path.join(folder + "_tok"))
  layout = extend_tokenizer(tok, 500)
  cfg = preset(f"tiny-{arch}", vocab_size=layout.size, bos_token_id=layout.bos_id, eos_token_id=layout.eos_id)
  tm = torch_model(cfg, seed)
  model = jax_model(cfg, tm, mesh)
  orbax_io.save_model(folder, model, orbax_io.make_meta(cfg, layout, "float32"), step=0, tokenizer=tok)
  return cfg, layout, tm, model, tok


def write_units(path: str, table: dict) -> None:
  """A slamkit features JSONL: {stem: units}."""
  with open(path, "w") as f:
    for stem, units in table.items():
      units = [int(u) for u in units]
      f.write(json.dumps({"units": units, "duration": [2] * len(units), "file_name": f"audio/{stem}.wav"}) + "\n")


def write_gold(path: str, header: str, rows: list[str]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(header + "\n" + "\n".join(rows) + "\n")
