"""Tokenisation by id (units, markers) + BPE (text) equals the HF tokenizer with the added tokens on the docs/reference.md §4
string (real Llama-3 tokenizer, extended as docs/reference.md §2)."""
import dataclasses

import numpy as np
import pytest
from transformers import AutoTokenizer

from slm_jax import vocab
from slm_jax.data import interleave, slamkit, tokenise
from slm_jax.testing import synthetic_data as synthetic


@pytest.fixture(scope="module")
def llama3(llama3_tokenizer_dir):
  tok = AutoTokenizer.from_pretrained(llama3_tokenizer_dir)
  layout = vocab.extend_tokenizer(tok)
  assert layout.unit_offset == 128256 and layout.speech_id == 128756 and layout.text_id == 128757
  return tok, dataclasses.replace(layout, bos_id=128000)  # Llama-3.2 adds <|begin_of_text|>; this file does not


def _hf(tok, s, bos=128000):
  ids = tok(s, add_special_tokens=False)["input_ids"]
  return ([bos] if bos is not None else []) + list(ids)


STRINGS = [
    "<text> The cat sat<speech><Un12><Un7><Un88><text> on the mat",
    "<speech><Un0><Un499><text> Hello, world!  Two  spaces\nand a newline<speech><Un3>",
    "<text> naïve café — 12345 don't<speech><text> émigré",
    "<Un3><Un49><Un7>",
    "Plain text with no markers at all.",
    "<text>no leading space<speech><Un1><Un1><Un2>",
]


@pytest.mark.parametrize("s", STRINGS)
def test_pieces_by_id_equal_hf_on_string(llama3, s):
  tok, layout = llama3
  enc = tokenise.DocumentTokenizer(tok, layout)
  got = enc.encode_pieces(vocab.parse_string(s))
  assert got.dtype == np.int32
  assert got.tolist() == _hf(tok, s)
  assert got.tolist() == vocab.Encoder(tok, layout).encode_string(s).tolist()


def test_interleaved_documents_equal_hf(llama3):
  tok, layout = llama3
  enc = tokenise.DocumentTokenizer(tok, layout)
  rng = np.random.default_rng(0)
  opts = slamkit.ReadOptions(kind="interleaved")
  for i in range(30):
    feats, align = synthetic.aligned_utterance(rng, f"u{i}.flac", float(rng.uniform(2, 20)))
    doc = slamkit.aligned_document(f"u{i}.flac", np.asarray(feats["units"]), np.asarray(feats["duration"]),
                                   align["aligned_text"], opts)
    for epoch in (0, 1):
      pieces = tokenise.document_pieces(doc, "interleaved", seed=3, epoch=epoch)
      s = interleave.pieces_to_string(pieces)
      ids = enc.encode_document(doc, "interleaved", seed=3, epoch=epoch)
      assert ids.tolist() == _hf(tok, s)
      kinds = layout.kinds(ids)
      assert (kinds == vocab.KIND_MARKER).sum() == s.count("<speech>") + s.count("<text>")
      assert (kinds == vocab.KIND_UNIT).sum() == s.count("<Un")


def test_text_path_matches_golden_vectors(llama3, llama_bpe_golden):
  tok, layout = llama3
  enc = tokenise.DocumentTokenizer(tok, layout)
  texts = [t for t, _ in llama_bpe_golden]
  assert [x.tolist() for x in enc.text_ids(texts)] == [ids for _, ids in llama_bpe_golden]


def test_no_bos_layout(llama3):
  tok, layout = llama3
  s = STRINGS[0]
  enc = tokenise.DocumentTokenizer(tok, dataclasses.replace(layout, bos_id=None))
  assert enc.encode_pieces(vocab.parse_string(s)).tolist() == _hf(tok, s, bos=None)
  assert tokenise.DocumentTokenizer(tok, layout, add_bos=False).encode_pieces(
      vocab.parse_string(s)).tolist() == _hf(tok, s, bos=None)


def test_slam_speech_sequences_end_with_eos():
  """docs/reference.md §2 SLAM layout: [<S>=1, <Un i>=i+2 ..., <S>=1] (BOS and EOS both 1)."""
  from slm_jax.data import pipeline
  from slm_jax.data.tokenise import DocumentTokenizer
  from slm_jax.vocab import VocabLayout
  slam = VocabLayout(base_size=2, num_units=500, bos_id=1, eos_id=1)
  enc = DocumentTokenizer(None, slam, add_eos=True)
  assert enc.encode_pieces([("units", [3, 49, 7])]).tolist() == [1, 5, 51, 9, 1]
  assert DocumentTokenizer(None, slam).encode_pieces([("units", [3])]).tolist() == [1, 5]
  it = pipeline.make_iterator({"speech": "data/demo/prepared/speech"}, {"speech": 1.0}, None, slam,
                              split="validation", seq_len=2048, global_batch_size=1, seed=0, add_eos=True)
  b = next(it)
  seg = b["segment_ids"][0]
  first = seg == 1
  ids = b["input_ids"][0][first]  # the whole document; targets are the next ids, the last one masked
  assert ids[0] == 1 and ids[-1] == 1 and b["targets"][0][first][-2] == 1
  middle = ids[1:-1]
  assert middle.size > 50 and (middle >= 2).all() and (middle < 502).all()
