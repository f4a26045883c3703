"""The two ASR backends of slm_jax/eval/asr.py on the same weights: a small random Whisper (real multilingual
vocabulary and tokenizer, from the Whisper base CTranslate2 fixture) saved as a transformers folder and converted to
CTranslate2 by ctranslate2's own converter, run on flite speech. Random weights make arbitrary but input-dependent
tokens, so the token ids of the two backends (torch vs CTranslate2 kernels, transformers vs faster-whisper features,
generate loops, suppression rules, length limits, detokenizers) must agree token for token; any difference in the
decoding rules shows up within a few tokens."""
import json
import os

import numpy as np
import pytest

from slm_jax.eval import asr

# (text, flite voice): lengths from 0.5 s to 2.7 s
CLIPS = [("The cat sat on the warm mat by the door.", "slt"), ("Please close the door when you leave.", "awb"),
         ("Hi.", "rms"), ("I would like a cup of hot tea.", "kal16"), ("The dog ran across the green field.", "slt"),
         ("Yes.", "awb")]
MAX_NEW_TOKENS = 24


@pytest.fixture(scope="module")
def clips(flite):
  out = []
  for text, voice in CLIPS:
    s = flite.synthesize(text, voice)
    assert s.sample_rate == asr.SAMPLE_RATE
    out.append(s.audio)
  return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """(transformers folder, CTranslate2 folder) of one seeded random Whisper."""
  ctranslate2 = pytest.importorskip("ctranslate2")
  pytest.importorskip("faster_whisper")
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from slm_jax import assets
  try:
    base = assets.whisper_base_ct2_dir()
  except assets.MaterialUnavailable as e:
    pytest.skip(f"test material unavailable: {e}")
  with open(os.path.join(base, "config.json")) as f:
    base_cfg = json.load(f)  # lang_ids, suppress_ids, suppress_ids_begin of the real Whisper base
  tok = transformers.WhisperTokenizerFast(tokenizer_file=os.path.join(base, "tokenizer.json"),
                                          pad_token="<|endoftext|>")
  assert len(tok) == 51865  # multilingual Whisper vocabulary: 50,257 BPE + specials, languages, timestamps
  ids = dict(zip(["eot", "sot", "en", "transcribe", "notimestamps", "blank"], tok.convert_tokens_to_ids(
      ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>", "Ġ"])))
  assert ids == {"eot": 50257, "sot": 50258, "en": 50259, "transcribe": 50359, "notimestamps": 50363, "blank": 220}
  cfg = transformers.WhisperConfig(vocab_size=len(tok), num_mel_bins=80, d_model=64, encoder_layers=2,
                                   decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                                   encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=1500,
                                   max_target_positions=448, decoder_start_token_id=ids["sot"],
                                   pad_token_id=ids["eot"], bos_token_id=ids["eot"], eos_token_id=ids["eot"],
                                   init_std=1.0)  # Whisper's 0.02 gives one token whatever the audio
  torch.manual_seed(0)
  model = transformers.WhisperForConditionalGeneration(cfg).eval()
  with torch.no_grad():
    # the output projection is the token embedding: make end of text and the blank token rivals of tokens this
    # model often picks, and the suppressed tokens likelier, so that early ends (sequences of different lengths in
    # a batch), the begin suppression and the suppression all take part
    emb = model.model.decoder.embed_tokens.weight
    emb[ids["eot"]] = 1.02 * emb[41771]
    emb[ids["blank"]] = 1.02 * emb[19118]
    emb[base_cfg["suppress_ids"]] *= 1.5
  lang_to_id = {t: i for t, i in zip(tok.convert_ids_to_tokens(base_cfg["lang_ids"]), base_cfg["lang_ids"])}
  # a fresh GenerationConfig: one made from the model config (`_from_model_config`) loses lang_to_id and the rest
  model.generation_config = transformers.GenerationConfig(
      decoder_start_token_id=ids["sot"], bos_token_id=ids["eot"], eos_token_id=ids["eot"], pad_token_id=ids["eot"],
      max_length=448, suppress_tokens=base_cfg["suppress_ids"], begin_suppress_tokens=base_cfg["suppress_ids_begin"],
      is_multilingual=True, lang_to_id=lang_to_id, task_to_id={"translate": 50358, "transcribe": ids["transcribe"]},
      no_timestamps_token_id=ids["notimestamps"], alignment_heads=[[1, 0], [1, 2]])
  root = tmp_path_factory.mktemp("whisper_tiny")
  hf_dir, ct2_dir = str(root / "hf"), str(root / "ct2")
  model.save_pretrained(hf_dir)
  fe = transformers.WhisperFeatureExtractor(feature_size=80)
  transformers.WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(hf_dir)
  fe.save_pretrained(hf_dir)  # preprocessor_config.json, which faster-whisper reads
  ctranslate2.converters.TransformersConverter(hf_dir, copy_files=["tokenizer.json", "preprocessor_config.json"]) \
      .convert(ct2_dir, quantization="float32")
  with open(os.path.join(ct2_dir, "config.json")) as f:
    ct2_cfg = json.load(f)
  assert ct2_cfg["lang_ids"] == base_cfg["lang_ids"] and ct2_cfg["suppress_ids"] == base_cfg["suppress_ids"]
  return hf_dir, ct2_dir


def _pair(folders, beam_size, batch_size=8):
  hf_dir, ct2_dir = folders
  hf = asr.Transcriber(hf_dir, beam_size=beam_size, batch_size=batch_size, max_new_tokens=MAX_NEW_TOKENS)
  ct2 = asr.Transcriber(ct2_dir, beam_size=beam_size, batch_size=batch_size, max_new_tokens=MAX_NEW_TOKENS,
                        compute_type="float32")
  return hf, ct2


def test_detect_backend(folders, tmp_path):
  hf_dir, ct2_dir = folders
  assert asr.detect_backend(hf_dir) == "transformers"
  assert asr.detect_backend(ct2_dir) == "faster-whisper"
  with pytest.raises(ValueError, match="neither"):
    asr.detect_backend(str(tmp_path))
  with pytest.raises(FileNotFoundError):
    asr.detect_backend(str(tmp_path / "missing"))


def test_backends_agree_greedy(folders, clips):
  hf, ct2 = _pair(folders, beam_size=1)
  assert (hf.backend, ct2.backend) == ("transformers", "faster-whisper")
  assert hf.prompt == ct2.prompt == [50258, 50259, 50359, 50363]  # sot, en, transcribe, notimestamps
  ids_hf, ids_ct2 = hf.token_ids(clips), ct2.token_ids(clips)
  assert ids_hf == ids_ct2
  # the sequences are not degenerate: audio-dependent, some ended by end of text, none longer than the limit
  assert len({tuple(s) for s in ids_hf}) == len(clips)
  lens = [len(s) for s in ids_hf]
  assert max(lens) <= MAX_NEW_TOKENS and min(lens) < MAX_NEW_TOKENS - 4, lens
  texts = hf(clips)
  assert texts == ct2(clips)
  assert all(texts) and not any("<|" in t for t in texts), texts  # no special or timestamp token in the text


def test_hf_beam_and_batching(folders, clips):
  """Beam search (each library's own stopping rule, so not compared across backends) changes some transcripts, and
  neither greedy nor beam transcripts depend on the batch."""
  hf_dir, _ = folders
  out = {}
  for beam_size in (1, 2):
    tr = asr.Transcriber(hf_dir, beam_size=beam_size, batch_size=4, max_new_tokens=MAX_NEW_TOKENS)
    out[beam_size] = tr.token_ids(clips)  # batches of 4 and 2
    assert [tr.token_ids([c])[0] for c in clips] == out[beam_size]
  assert out[1] != out[2]


def test_max_new_tokens_checked(folders):
  with pytest.raises(ValueError, match="max_new_tokens"):
    asr.Transcriber(folders[0], max_new_tokens=asr.MAX_NEW_TOKENS + 1)
