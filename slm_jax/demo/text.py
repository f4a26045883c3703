"""Text material for the demo dataset: public-domain prose (Alice ch. I-II from Debian's flite, Botchan from the
sentencepiece sdist), sentence splitting, and the look-alike evaluation items (sWUGGY / sBLIMP / tSC, docs/reference.md §6)."""
from __future__ import annotations

import collections
import re

import numpy as np

from slm_jax import assets

ALICE_PATH = "/usr/share/doc/flite/examples/alice"
_SENT_END = re.compile(r"""(?<=[.!?])['")\]]*\s+(?=['"(`]*[A-Z])""")


def botchan_text() -> str:
  """Botchan (Gutenberg #8868) from `sentencepiece==0.2.1`'s sdist, licence header and footer removed."""
  with open(assets.botchan_path(), "rb") as f:
    raw = f.read().decode("utf-8-sig").replace("\r\n", "\n")
  start = raw.index("\nCHAPTER I\n")
  end = raw.index("--(THE END)--")  # the transcriber's notes follow
  text = re.sub(r"\[Footnote \d+:[^\]]*\]", "", raw[start:end])
  return re.sub(r"\s*\[(?:[A-Z]|\d+)\]", "", text)  # note markers such as "insistent.[A]", "tanzaku[3]"


def cmudict_words() -> dict[str, list[str]]:
  """CMU pronouncing dictionary (pocketsphinx==5.1.1 wheel): word -> phones (stress digits kept)."""
  out = {}
  with open(assets.cmudict_path(), encoding="utf-8") as f:
    for line in f:
      parts = line.split()
      if parts and "(" not in parts[0]:
        out[parts[0].lower()] = parts[1:]
  return out


def clean(s: str) -> str:
  s = s.replace("`", "'").replace("--", " -- ").replace("_", "")
  return re.sub(r"\s+", " ", s).strip()


def sentences(paragraph: str) -> list[str]:
  return [s.strip() for s in _SENT_END.split(clean(paragraph)) if s.strip()]


def alice_paragraphs() -> list[list[str]]:
  """Alice ch. I-II: a list of paragraphs, each a list of sentences (titles and `* * *` lines dropped)."""
  with open(ALICE_PATH, encoding="utf-8") as f:
    paras = re.split(r"\n\s*\n", f.read())
  out = []
  for p in paras:
    p = clean(p)
    if not p or p.startswith("*") or p.isupper() or p.startswith("CHAPTER") or p == "The Pool of Tears":
      continue
    if p.startswith("ALICE'S ADVENTURES"):
      continue
    out.append(sentences(p))
  return out


def botchan_chapters() -> list[list[str]]:
  """Botchan's 11 chapters, each a list of sentences (the text has no paragraph breaks)."""
  parts = re.split(r"\nCHAPTER [IVX]+\.?\n", "\n" + botchan_text())
  return [sentences(p.replace("\n", " ")) for p in parts if p.strip()]


def group_utterances(sents: list[str], min_words: int = 12, max_words: int = 40) -> list[str]:
  """Consecutive sentences joined into utterances of about min..max words (a longer sentence stays whole)."""
  out, cur, n = [], [], 0
  for s in sents:
    w = len(s.split())
    if cur and n + w > max_words:
      out.append(" ".join(cur))
      cur, n = [], 0
    cur.append(s)
    n += w
    if n >= min_words and s[-1:] in ".!?\"'":
      out.append(" ".join(cur))
      cur, n = [], 0
  if cur:
    out.append(" ".join(cur))
  return out


def word_counts(texts) -> collections.Counter:
  c = collections.Counter()
  for t in texts:
    c.update(w for w in re.findall(r"[a-z]+(?:'[a-z]+)?", t.lower()))
  return c


# ---------------------------------------------------------------------------------------------------------------
# Look-alike evaluation items
# ---------------------------------------------------------------------------------------------------------------
FREQ_BANDS = ((0, 0), (1, 5), (6, 20), (21, 100), (101, 10 ** 9))  # oov, 1-5, 6-20, 21-100, >100
_VOWELS = "aeiou"
_CONS = "bcdfghjklmnprstvwz"


def make_nonword(word: str, rng: np.random.Generator, lexicon, tries: int = 50) -> str | None:
  """A pronounceable non-word: one or two letters of `word` replaced by another of the same class (vowel /
  consonant); never a word of `lexicon`."""
  for _ in range(tries):
    chars = list(word)
    for _ in range(1 + int(rng.random() < 0.3)):
      i = int(rng.integers(len(chars)))
      pool = _VOWELS if chars[i] in _VOWELS else _CONS if chars[i] in _CONS else None
      if pool is None:
        continue
      chars[i] = str(rng.choice([c for c in pool if c != chars[i]]))
    cand = "".join(chars)
    if cand != word and cand not in lexicon:
      return cand
  return None


def swuggy_items(counts, cmudict, per_band: int, rng: np.random.Generator, pronounce, tries: int = 12) -> list[dict]:
  """Word / non-word pairs: `per_band` words from each frequency band of the demo corpus (oov = words of the CMU
  dictionary that never occur in it), each with a non-word made from it. Frequency = count in the demo text.
  As in Wuggy, the pair is matched in phone count; `pronounce(text)` -> (phones, seconds) as the TTS says it
  (flite reads an invented word with letter-to-sound rules, often with more phones than the word it came from).
  Of `tries` candidate non-words with the word's phone count, the one closest in duration is kept (so that length
  does not give the word away); a word with no such candidate is left out."""
  lexicon = set(cmudict) | set(counts)
  items = []
  vocab = sorted(w for w in cmudict if w.isalpha() and 3 <= len(w) <= 9)
  variants = {w + suf for w, c in counts.items() if c >= 2 and len(w) >= 4
              for suf in ("s", "es", "ed", "ing", "er", "ers", "ly", "ness", "ful", "less")}
  for lo, hi in FREQ_BANDS:
    cands = [w for w in vocab if lo <= counts.get(w, 0) <= hi]
    if hi == 0:  # oov: dictionary words never in the corpus, kept to inflections of corpus words (not names)
      cands = [w for w in cands if w in variants]
    rng.shuffle(cands)
    n = 0
    for w in cands:
      w_phones, w_seconds = pronounce(w)
      best = {}  # |duration difference| -> non-word (the first of equals)
      for c in {c: None for c in (make_nonword(w, rng, lexicon) for _ in range(tries)) if c is not None}:
        c_phones, c_seconds = pronounce(c)
        if len(c_phones) == len(w_phones):
          best.setdefault(abs(c_seconds - w_seconds), c)
      if not best:
        continue
      nw = best[min(best)]
      items.append({"word": w, "nonword": nw, "frequency": counts.get(w, 0)})
      n += 1
      if n >= per_band:
        break
  return items


# sBLIMP-like paradigms: (type, subtype, good template, bad template); {N}/{Ns} singular/plural noun etc.
_NOUNS = [("cat", "cats"), ("dog", "dogs"), ("girl", "girls"), ("boy", "boys"), ("teacher", "teachers"),
          ("rabbit", "rabbits"), ("queen", "queens"), ("student", "students"), ("doctor", "doctors"),
          ("farmer", "farmers"), ("mouse", "mice"), ("child", "children"), ("woman", "women"), ("man", "men")]
_VERBS = [("sees", "see"), ("likes", "like"), ("finds", "find"), ("watches", "watch"), ("helps", "help"),
          ("calls", "call"), ("follows", "follow"), ("visits", "visit")]
_OBJECTS = ["the house", "a small bird", "the old garden", "a white rabbit", "the river", "the school",
            "a golden key", "the little door"]
_PAST = [("ate", "eaten", "the cake"), ("wrote", "written", "a letter"), ("took", "taken", "the key"),
         ("saw", "seen", "the river"), ("broke", "broken", "the glass"), ("drove", "driven", "the car"),
         ("gave", "given", "a present"), ("sang", "sung", "a song"), ("spoke", "spoken", "the truth")]
_GENDERED = [("girl", "herself", "himself"), ("woman", "herself", "himself"), ("queen", "herself", "himself"),
             ("boy", "himself", "herself"), ("man", "himself", "herself"), ("king", "himself", "herself")]


def sblimp_items(n_per_paradigm: int, corpus_sentences: list[str], rng: np.random.Generator) -> list[dict]:
  """Grammatical / ungrammatical sentence pairs in five paradigms (four BLiMP types and a word-order swap).
  Where the two sentences differ in length (see / sees, this cat / these cats, himself / herself, ate / eaten),
  the paradigm alternates which of them is the longer, so that length says nothing about grammaticality."""
  items = []

  def pick(seq):
    return seq[int(rng.integers(len(seq)))]

  for i in range(n_per_paradigm):
    (n_sg, n_pl), (v_sg, v_pl), obj = pick(_NOUNS), pick(_VERBS), pick(_OBJECTS)
    if i % 2 == 0:  # the ungrammatical verb is the shorter one
      good, bad = f"The {n_sg} {v_sg} {obj}.", f"The {n_sg} {v_pl} {obj}."
    else:
      good, bad = f"The {n_pl} {v_pl} {obj}.", f"The {n_pl} {v_sg} {obj}."
    items.append(("subject_verb_agreement", "regular_plural_subject_verb_agreement", good, bad))
  for i in range(n_per_paradigm):
    (n_sg, n_pl), (v_sg, _) = pick(_NOUNS), pick(_VERBS)
    subj = pick(["Mary", "John", "The teacher", "Alice", "My sister"])
    if i % 2 == 0:  # the ungrammatical noun is the longer one
      good, bad = f"{subj} {v_sg} this {n_sg}.", f"{subj} {v_sg} this {n_pl}."
    else:
      good, bad = f"{subj} {v_sg} these {n_pl}.", f"{subj} {v_sg} these {n_sg}."
    items.append(("determiner_noun_agreement", "determiner_noun_agreement_1", good, bad))
  for i in range(n_per_paradigm):
    noun, refl, wrong = pick(_GENDERED[:3] if i % 2 == 0 else _GENDERED[3:])  # the wrong one: himself / herself
    verb = pick(["saw", "hurt", "helped", "praised", "surprised"])
    items.append(("anaphor_agreement", "anaphor_gender_agreement", f"The {noun} {verb} {refl}.",
                  f"The {noun} {verb} {wrong}."))
  for i in range(n_per_paradigm):
    past, part, obj = pick(_PAST)
    subj = pick(["The boy", "My friend", "The old woman", "Alice", "The doctor"])
    if i % 2 == 0:  # BLiMP's form: a participle for the past ("The boy eaten the cake."), mostly the longer
      good, bad = f"{subj} {past} {obj}.", f"{subj} {part} {obj}."
    else:  # a past for the participle ("The boy has ate the cake."), mostly the shorter
      good, bad = f"{subj} has {part} {obj}.", f"{subj} has {past} {obj}."
    items.append(("irregular_forms", "irregular_past_participle_verbs", good, bad))
  pool = [s for s in corpus_sentences if 6 <= len(s.split()) <= 14 and re.fullmatch(r"[A-Za-z ,.']+", s)]
  for s in [pool[i] for i in rng.permutation(len(pool))[:n_per_paradigm]]:
    w = s.split()
    i = int(rng.integers(1, len(w) - 2))
    bad = w[:i] + [w[i + 1], w[i]] + w[i + 2:]
    items.append(("word_order", "adjacent_word_swap", s, " ".join(bad)))
  return [{"type": t, "subtype": st, "good": g, "bad": b} for t, st, g, b in items if g != b]


def tsc_stories(sents: list[str], n: int, rng: np.random.Generator, max_words: int = 80) -> list[dict]:
  """Five-sentence stories from consecutive sentences; the wrong ending is the ending of another story."""
  stories, i = [], 0
  while i + 5 <= len(sents) and len(stories) < n:
    window = sents[i:i + 5]
    if sum(len(s.split()) for s in window) <= max_words and all(len(s.split()) >= 3 for s in window):
      stories.append({"context": window[:4], "ending": window[4]})
      i += 5
    else:
      i += 1
  perm = _derangement(len(stories), rng)
  for s, j in zip(stories, perm):
    s["wrong_ending"] = stories[j]["ending"]
  return stories


def _derangement(n: int, rng: np.random.Generator) -> list[int]:
  if n < 2:
    raise ValueError("need at least two stories")
  while True:
    p = rng.permutation(n)
    if not np.any(p == np.arange(n)):
      return [int(x) for x in p]
