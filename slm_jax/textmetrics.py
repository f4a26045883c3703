"""Text metrics on words: slamkit's auto-BLEU (GenPPL reports it; the preference data's repetition filter uses it)."""
from __future__ import annotations

import re
from typing import Callable

_WORD_RE = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def word_tokenize(text: str) -> list[str]:
  """NLTK's word tokenizer when installed (slamkit uses it), else words and punctuation by regex."""
  try:
    from nltk.tokenize import NLTKWordTokenizer
    return NLTKWordTokenizer().tokenize(text)
  except ImportError:
    return _WORD_RE.findall(text)


def auto_bleu(text: str, n: int = 2, tokenize: Callable[[str], list[str]] = word_tokenize) -> float:
  """slamkit's `calc_auto_bleu`: the fraction of the text's word n-grams that occur elsewhere in its n-gram list."""
  tokens = tokenize(text)
  grams = [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
  if not grams:
    return 0.0
  hits = sum(1 for i, g in enumerate(grams) if g in grams[:i] or g in grams[i + 1:])
  return hits / len(grams)
