"""A model initialised at random with a real tokenizer (the demo) exports a HF folder whose special ids are the
tokenizer's, whose tokenizer files load and decode without warnings, and whose `generate` in transformers stops
at the tokenizer's EOS."""
import importlib.util
import json
import logging
import os
import warnings

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from slm_jax.checkpoint import orbax_io
from slm_jax.checkpoint.hf_export import convert_orbax_to_hf
from slm_jax.checkpoint.tokenizer_files import clean_tokenizer_files
from slm_jax.model.create import model_shardings
from slm_jax.sharding import make_mesh
from slm_jax.train.init import fresh_start

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _demo_config(tokenizer_dir, scan_layers=False):
  spec = importlib.util.spec_from_file_location("demo_config", os.path.join(ROOT, "configs", "demo.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config()
  c.unlock()
  c.vocab.tokenizer = tokenizer_dir
  c.model.scan_layers = scan_layers
  return c


def _rig(params, chain):
  """Attention and MLP outputs zeroed, so the last hidden state is the current token's embedding; with tied
  embeddings the next token is argmax_t <emb[t], emb[cur]>. The chain's rows lie on a circle at 60 degree steps with
  norms x3 per step and every other row is zero, so each chain token is followed by the next one and the last
  repeats itself forever."""
  emb = np.zeros_like(np.asarray(params["model"]["embed_tokens"]["embedding"]))
  for k, t in enumerate(chain):
    emb[t, :2] = 3.0 ** k * np.array([np.cos(k * np.pi / 3), np.sin(k * np.pi / 3)])
  params["model"]["embed_tokens"]["embedding"] = emb
  layers = params["model"]["layers"]
  for layer in [layers] if "self_attn" in layers else layers.values():  # stacked (scan_layers) or per layer
    for mod, proj in (("self_attn", "o_proj"), ("mlp", "down_proj")):
      layer[mod][proj]["kernel"] = np.zeros_like(np.asarray(layer[mod][proj]["kernel"]))
  return params


class _Records(logging.Handler):
  def __init__(self):
    super().__init__(logging.WARNING)
    self.records = []

  def emit(self, record):
    self.records.append(record)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_random_init_export_carries_the_tokenizer_ids(llama3_tokenizer_dir, tmp_path, scan_layers):
  from transformers import AutoModelForCausalLM, AutoTokenizer
  from transformers.utils import logging as hf_logging

  mesh = make_mesh(devices=jax.devices()[:1])
  start = fresh_start(_demo_config(llama3_tokenizer_dir, scan_layers), mesh, "float32", "float32")
  assert ("self_attn" in start.params["model"]["layers"]) == scan_layers  # layers stored stacked [L, ...]
  tok = start.tokenizer
  assert (tok.bos_token_id, tok.eos_token_id) == (128000, 128001)
  assert (start.cfg.bos_token_id, start.cfg.eos_token_id) == (128000, 128001)  # not the tiny-llama preset's 0 / 1
  assert start.cfg.tie_word_embeddings

  chain = tok.convert_tokens_to_ids(["Ġthe", "Ġcat", "Ġsat"]) + [tok.eos_token_id]
  graphdef, state, _ = model_shardings(start.cfg, mesh)
  nnx.replace_by_pure_dict(state, _rig(start.params, chain))
  model = nnx.merge(graphdef, state)
  ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "hf")
  orbax_io.save_model(ckpt, model, orbax_io.make_meta(start.cfg, start.layout, "float32"), tokenizer=tok)
  convert_orbax_to_hf(ckpt, out, dtype="float32", print_fn=lambda *a: None)

  config = json.load(open(os.path.join(out, "config.json")))
  gen = json.load(open(os.path.join(out, "generation_config.json")))
  tok_cfg = json.load(open(os.path.join(out, "tokenizer_config.json")))
  assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (128000, 128001, None)
  assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (128000, 128001, 128001)
  assert not {"local_files_only", "is_local"} & set(tok_cfg) and tok_cfg["clean_up_tokenization_spaces"] is False
  assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast"  # a class transformers 4 knows too

  records, handler = [], _Records()
  hf_logging.get_logger().addHandler(handler)
  try:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      hf_tok = AutoTokenizer.from_pretrained(out)
      hf_model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
      prompt = torch.tensor([[hf_tok.bos_token_id, chain[0]]])
      with torch.no_grad():
        ids = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                max_new_tokens=10)[0].tolist()
      text = hf_tok.decode(ids[1:], skip_special_tokens=True)
      sample = "Hello , world ! It's 3.5 o'clock ; isn't it ?"
      same = hf_tok(sample)["input_ids"] == tok(sample)["input_ids"]
      decoded = hf_tok.decode(hf_tok(sample)["input_ids"], skip_special_tokens=True)
    records = handler.records
  finally:
    hf_logging.get_logger().removeHandler(handler)
  assert (hf_tok.bos_token_id, hf_tok.eos_token_id, len(hf_tok)) == (128000, 128001, start.layout.size)
  assert ids == [128000] + chain  # stopped at the real EOS, not after 10 tokens
  assert text == " the cat sat" and same and decoded == sample
  assert [r.getMessage() for r in records] == []
  assert [str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)] == []


def test_clean_tokenizer_files(tmp_path):
  """Load-time keys go, transformers 5's backend class name becomes one transformers 4 knows, BPE tokenizers stop
  asking for a clean-up transformers ignores with a warning; a WordPiece tokenizer keeps its clean-up."""
  for model_type, cleanup in (("BPE", False), ("WordPiece", True)):
    d = tmp_path / model_type
    d.mkdir()
    (d / "tokenizer.json").write_text(json.dumps({"model": {"type": model_type}}))
    dirty = {"local_files_only": True, "is_local": True, "tokenizer_class": "TokenizersBackend",
             "clean_up_tokenization_spaces": True, "eos_token": "</s>", "model_max_length": 8}
    (d / "tokenizer_config.json").write_text(json.dumps(dirty))
    clean_tokenizer_files(str(d))
    assert json.loads((d / "tokenizer_config.json").read_text()) == {
        "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": cleanup, "eos_token": "</s>",
        "model_max_length": 8}
