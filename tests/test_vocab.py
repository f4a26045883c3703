"""The docs/reference.md §2 vocabulary on the real Llama-3 tokenizer: ids, golden tokenisation, mixed strings."""
import numpy as np
import pytest
import transformers

from slm_jax.vocab import (KIND_MARKER, KIND_TEXT, KIND_UNIT, LLAMA3_LAYOUT, QWEN2_5_LAYOUT, Encoder, VocabLayout,
                           extend_tokenizer, parse_string, units_to_string)

MIXED = "<text> The cat sat<speech><Un12><Un7><Un499><Un0><text> on the mat, 3.14€!<speech><Un250>"


@pytest.fixture(scope="module")
def extended(llama3_tokenizer_dir):
  tok = transformers.AutoTokenizer.from_pretrained(llama3_tokenizer_dir)
  assert len(tok) == 128256
  layout = extend_tokenizer(tok)
  return tok, layout


def test_llama3_ids_as_spec(extended):
  tok, layout = extended
  assert layout == LLAMA3_LAYOUT
  assert len(tok) == layout.size == 128758
  ids = tok.convert_tokens_to_ids([f"<Un{i}>" for i in range(500)] + ["<speech>", "<text>"])
  assert ids == list(range(128256, 128758))
  assert (layout.unit_offset, layout.speech_id, layout.text_id) == (128256, 128756, 128757)
  assert tok.convert_ids_to_tokens([128000, 128001]) == ["<|begin_of_text|>", "<|end_of_text|>"]


def test_qwen_layout_arithmetic():
  """docs/reference.md §2 numbers for Qwen2.5 (tokenizer length 151665; the matrix has spare rows up to 151936 / 152064)."""
  q = QWEN2_5_LAYOUT
  assert (q.unit_offset, q.unit_offset + 499, q.speech_id, q.text_id, q.size) == (151665, 152164, 152165, 152166,
                                                                                  152167)
  assert VocabLayout(base_size=10, num_units=0).size == 10


def test_golden_vectors_survive_extension(extended, llama_bpe_golden):
  tok, layout = extended
  cases = list(llama_bpe_golden)
  assert len(cases) == 46
  enc = Encoder(tok, layout)
  for text, want in cases:
    assert tok.encode(text, add_special_tokens=False) == want, repr(text)
    assert enc.text_ids(text) == want, repr(text)


def test_mixed_string(extended):
  tok, layout = extended
  enc = Encoder(tok, layout)
  text1 = tok.encode(" The cat sat", add_special_tokens=False)
  text2 = tok.encode(" on the mat, 3.14€!", add_special_tokens=False)
  assert text1 == [578, 8415, 7731]  # " The", " cat", " sat" in Meta's ranks
  want = ([128000, 128757] + text1 + [128756, 128256 + 12, 128256 + 7, 128256 + 499, 128256] + [128757] + text2
          + [128756, 128256 + 250])
  ids = enc.encode_string(MIXED)
  assert ids.dtype == np.int32 and ids.tolist() == want
  # the HF tokenizer with the added tokens agrees (units and markers are never split by BPE)
  assert tok(MIXED, add_special_tokens=False).input_ids == want[1:]
  assert enc.encode_string(MIXED, bos=False).tolist() == want[1:]
  pieces = [("marker", "text"), ("text", " The cat sat"), ("marker", "speech"), ("units", [12, 7, 499, 0]),
            ("marker", "text"), ("text", " on the mat, 3.14€!"), ("marker", "speech"), ("units", [250])]
  assert parse_string(MIXED) == pieces
  assert enc.encode_pieces(pieces).tolist() == want
  assert enc.decode(ids) == MIXED
  assert tok.decode(want[1:]) == MIXED
  kinds = layout.kinds(ids)
  assert kinds.tolist() == [KIND_TEXT, KIND_MARKER, KIND_TEXT, KIND_TEXT, KIND_TEXT, KIND_MARKER] + [KIND_UNIT] * 4 \
      + [KIND_MARKER] + [KIND_TEXT] * len(text2) + [KIND_MARKER, KIND_UNIT]
  assert units_to_string([3, 49]) == "<Un3><Un49>"
  with pytest.raises(ValueError, match="unit ids must lie in 0..499"):
    enc.encode_pieces([("units", [500])])


def test_extension_is_idempotent_and_checked(extended, tmp_path, llama3_tokenizer_dir):
  tok, layout = extended
  tok.save_pretrained(tmp_path / "ext")
  again = transformers.AutoTokenizer.from_pretrained(tmp_path / "ext")
  assert extend_tokenizer(again) == layout and len(again) == 128758
  wrong = transformers.AutoTokenizer.from_pretrained(llama3_tokenizer_dir)
  wrong.add_tokens(["<Un0>", "<Un2>"])  # a tokenizer whose units are not where docs/reference.md §2 puts them
  with pytest.raises(ValueError, match="maps <Un1> to"):
    extend_tokenizer(wrong)
