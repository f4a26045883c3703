"""Where a run starts (slm_jax.train.init): TWIST init from a HF folder with the vocabulary grown on the fly, from
the conversion tool's Orbax checkpoint, and the SLAM speech-only 502-token vocabulary, against the HF tensors."""
import os
import shutil

import jax
import numpy as np
import pytest
import torch

from hf_tiny import torch_model
from repo_configs import load_config, set_keys
from slm_jax.checkpoint.hf_to_orbax import convert_hf_to_orbax
from slm_jax.model import preset
from slm_jax.sharding import make_mesh
from slm_jax.train.init import fresh_start


def _config(name, arg=None, **kw):
  c = load_config(name, arg)
  c.unlock()
  return set_keys(c, kw)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, llama3_tokenizer_dir):
  """A tiny random Llama with the real Llama-3 vocabulary (128256 rows, tied) and tokenizer."""
  path = str(tmp_path_factory.mktemp("hf"))
  tm = torch_model(preset("tiny-llama", vocab_size=128256, hidden_size=32, intermediate_size=64, head_dim=8))
  tm.save_pretrained(path)
  for f in os.listdir(llama3_tokenizer_dir):
    shutil.copy(os.path.join(llama3_tokenizer_dir, f), path)
  return path, tm.model.embed_tokens.weight.detach().numpy().copy()


def _emb(start):
  return np.asarray(start.params["model"]["embed_tokens"]["embedding"])


def test_twist_init_from_hf_and_from_converted_orbax(hf_dir, tmp_path):
  path, hf_emb = hf_dir
  mesh = make_mesh(devices=jax.devices()[:1])
  s = fresh_start(_config("sims_llama3_2_3b", **{"init.path": path}), mesh, "float32", "bfloat16")
  assert s.layout.size == 128758 and s.cfg.vocab_size == 128758 and len(s.tokenizer) == 128758
  assert (s.cfg.dtype, s.cfg.param_dtype, s.cfg.tie_word_embeddings) == ("bfloat16", "float32", True)
  emb = _emb(s)
  np.testing.assert_array_equal(emb[:128256], hf_emb)              # pretrained rows untouched
  new = emb[128256:128758]                                          # 500 units + 2 markers: mean of old rows + noise
  np.testing.assert_allclose(new.mean(0), hf_emb.mean(0), atol=3 * hf_emb.std() / np.sqrt(len(new)))
  assert np.abs(new - hf_emb.mean(0)).max() < 0.5 * np.abs(hf_emb).max()
  assert not emb[128758:].any()                                     # padding rows
  # the conversion tool's checkpoint gives the same start
  ck = str(tmp_path / "ck")
  convert_hf_to_orbax(path, ck, num_units=500, dtype="float32", print_fn=lambda *_: None)
  o = fresh_start(_config("sims_llama3_2_3b", **{"init.kind": "orbax", "init.path": ck}), mesh, "float32",
                  "bfloat16")
  assert o.layout == s.layout and o.cfg == s.cfg and len(o.tokenizer) == 128758
  np.testing.assert_array_equal(_emb(o), emb)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), o.params, s.params)


def test_slam_init_keeps_first_502_rows_and_sets_rope_theta(hf_dir):
  path, hf_emb = hf_dir
  s = fresh_start(_config("slam_qwen2_5_0_5b", **{"init.path": path}), make_mesh(devices=jax.devices()[:1]),
                  "bfloat16", "bfloat16")
  assert s.cfg.vocab_size == 502 and s.cfg.rope_theta == 10000.0 and s.tokenizer is None
  assert (s.layout.bos_id, s.layout.unit_offset) == (1, 2)          # PAD 0, <S> 1, <Un i> = i + 2
  emb = _emb(s).astype(np.float32)
  assert emb.shape == (512, 32)
  np.testing.assert_array_equal(emb[:502], torch.tensor(hf_emb[:502]).bfloat16().float().numpy())
  assert not emb[502:].any()


def test_random_init_needs_a_known_layout():
  c = _config("demo", "tiny", **{"vocab.layout": "nope"})
  with pytest.raises(ValueError, match="vocab.layout"):
    fresh_start(c, make_mesh(devices=jax.devices()[:1]), "float32", "float32")
