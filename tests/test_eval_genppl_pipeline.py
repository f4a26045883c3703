"""GenPPL end to end (slm_jax.eval.genppl.genppl_pipeline, tools/evaluate.py --benchmark=genppl --judge=...).

1. Real weights: flite audio -> Whisper base (faster-whisper) -> SmolLM2-135M judge run by our model code; the
   GenPPL equals transformers' on the same transcripts and judge within 1e-3 relative.
2. Every stage on a tiny speech LM, a random unit vocoder and a word-level judge: StoryCloze prompts (first N
   correct items, 3 s) -> continuations -> wavs -> transcripts -> GenPPL, outputs kept; restarting from the kept
   transcripts gives the same result.
Both are slow (SLM_JAX_SLOW=1).
"""
import json
import math
import os

import jax
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from slm_jax import sharding
from slm_jax.eval import genppl as gp
from slm_jax.eval.generate import SamplingConfig
from slm_jax.vocoder import VocoderConfig, convert
from slm_jax.vocoder import model as vm
from test_eval_asr import SENTENCES
from test_eval_helpers import speech_checkpoint, word_tokenizer, torch_model


@pytest.fixture(scope="module")
def whisper_dir():
  pytest.importorskip("faster_whisper")
  from slm_jax import assets
  try:
    return assets.whisper_base_ct2_dir()
  except assets.MaterialUnavailable as e:
    pytest.skip(f"test material unavailable: {e}")


def _mesh():
  return sharding.make_mesh(fsdp=1, devices=jax.devices()[:1])


@pytest.mark.slow  # ~2 min on 2 busy cores: SmolLM2 loaded by us and by transformers, Whisper
def test_genppl_smollm2_judge_matches_transformers(tmp_path, smollm2_dir, whisper_dir, flite):
  import torch
  import transformers
  from slm_jax.demo.tts import FLITE_VOICES
  fl = flite
  wavs = tmp_path / "wavs"
  wavs.mkdir()
  for i, text in enumerate(SENTENCES[:8]):
    sf.write(wavs / f"s{i}.wav", fl.synthesize(text, FLITE_VOICES[i % 4]).audio, 16000)
  res = gp.genppl_pipeline(str(tmp_path / "out"), smollm2_dir, wav_dir=str(wavs), asr_model=whisper_dir,
                           mesh=_mesh())
  rows = [json.loads(ln) for ln in (tmp_path / "out" / "transcripts.jsonl").read_text().splitlines()]
  assert [r["file_name"] for r in rows] == [f"s{i}" for i in range(8)]
  assert sum(len(r["text"].split()) for r in rows) > 50
  tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
  tm = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
  nll = []
  with torch.no_grad():
    for r in rows:
      ids = torch.tensor([tok(r["text"])["input_ids"]])
      logp = torch.log_softmax(tm(ids).logits[0, :-1].double(), -1)
      nll.append(-logp.gather(1, ids[0, 1:, None]).mean().item())
  assert res["num_scored"] == 8
  assert res["genppl"] == pytest.approx(math.exp(np.mean(nll)), rel=1e-3)
  assert json.loads((tmp_path / "out" / "genppl.json").read_text())["stages"]["asr"]["wav_dir"] == str(wavs)


def _random_vocoder(path: str) -> None:
  cfg = VocoderConfig(num_embeddings=500, embedding_dim=8, upsample_rates=(5, 4, 4, 2, 2),
                      upsample_kernel_sizes=(11, 8, 8, 4, 4), upsample_initial_channel=32,
                      resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),), resblock_type="2")
  state = nnx.state(vm.UnitHifiGan(cfg, rngs=nnx.Rngs(0)), nnx.Param)
  params = {".".join(str(p) for p in path): np.asarray(v[...]) for path, v in nnx.to_flat_state(state)}
  convert.save(cfg, params, path)


@pytest.mark.slow  # ~1.5 min: generation, vocoder, Whisper and judge compiles
def test_genppl_pipeline_every_stage(tmp_path, whisper_dir):
  mesh = _mesh()
  ckpt = str(tmp_path / "slm")
  speech_checkpoint(ckpt, mesh)
  rng = np.random.RandomState(0)
  sc_dir = tmp_path / "ssc"
  sc_dir.mkdir()
  with open(sc_dir / "units.jsonl", "w") as f:  # 0.08 s per unit: a 3 s prompt keeps 37 units
    for i in range(3):
      for label in ("correct", "incorrect"):
        u = rng.randint(0, 500, 60).tolist()
        f.write(json.dumps({"units": u, "duration": [2] * 60, "file_name": f"{i}_story{i}_{label}.wav"}) + "\n")
  _random_vocoder(str(tmp_path / "voc"))
  tok = word_tokenizer(str(tmp_path / "judge"))
  from slm_jax.model.config import preset
  torch_model(preset("tiny-llama", vocab_size=len(tok), bos_token_id=1, eos_token_id=2), seed=5,
              std=0.1).save_pretrained(str(tmp_path / "judge"))
  out = tmp_path / "run"
  res = gp.genppl_pipeline(str(out), str(tmp_path / "judge"), ckpt=ckpt, data_dir=str(sc_dir), num_prompts=2,
                           vocoder=str(tmp_path / "voc"), asr_model=whisper_dir, mesh=mesh,
                           sampling=SamplingConfig(max_new_tokens=10))
  recs = [json.loads(ln) for ln in (out / "continuations.jsonl").read_text().splitlines()]
  assert [r["file_name"] for r in recs] == ["0_story0_correct_continuation", "1_story1_correct_continuation"]
  for r in recs:
    assert len(r["prompt"]) == 37 and len(r["units"]) == 10
    wav, sr = sf.read(r["wav"])
    assert sr == 16000 and len(wav) == (37 + 10) * 320  # prompt + continuation (as slamkit), hop 5*4*4*2*2
  assert len((out / "transcripts.jsonl").read_text().splitlines()) == 2
  assert res["num_samples"] == 2 and res["stages"]["generate"]["sampling"]["temperature"] == 0.8
  again = gp.genppl_pipeline(str(tmp_path / "again"), str(tmp_path / "judge"),
                             transcripts=str(out / "transcripts.jsonl"), mesh=mesh)
  assert again["per_sample_nll"] == res["per_sample_nll"]
  assert again["auto_bleu_2"] == res["auto_bleu_2"]
  with pytest.raises(ValueError, match="--vocoder"):
    gp.genppl_pipeline(str(tmp_path / "x"), str(tmp_path / "judge"), continuations=str(out / "continuations.jsonl"),
                       mesh=mesh)
