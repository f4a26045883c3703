"""docs/reference.md §4 interleaving: span-selection properties (hypothesis), the sequence construction against hand-worked strings
and a literal per-word reference, seeding and epochs."""
import math
from bisect import bisect_left, bisect_right

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from slm_jax.data import interleave, records
from slm_jax.data.interleave import build_pieces, pieces_to_string, select_spans

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)


def _doc(words, times, units, durations, doc_id="d"):
  return records.Document(
      doc_id=doc_id, text="".join(words), word_offsets=np.cumsum([len(w) for w in words]).astype(np.int32),
      word_starts=np.asarray([t[0] for t in times], np.float64), word_ends=np.asarray([t[1] for t in times]),
      units=np.asarray(units, np.int16), durations=np.asarray(durations, np.int32))


def _spans(mask):
  """Maximal runs of True as (start, end)."""
  out, i = [], 0
  while i < len(mask):
    if mask[i]:
      j = i
      while j < len(mask) and mask[j]:
        j += 1
      out.append((i, j))
      i = j
    else:
      i += 1
  return out


@SETTINGS
@given(n=st.integers(0, 400), seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 50))
def test_at_least_ceil_eta_n_spoken_and_accepted_spans_disjoint(n, seed, epoch):
  trace = []
  mask = select_spans(n, interleave.pattern_rng(seed, epoch, 7), trace=trace)
  assert mask.dtype == bool and mask.shape == (n,)
  assert mask.sum() >= math.ceil(0.3 * n)
  accepted = [(s, min(s + length, n)) for s, length, ok in trace if ok]
  covered = np.zeros(n, int)
  for s, e in accepted:
    covered[s:e] += 1
  assert covered.max(initial=0) <= 1  # accepted spans never overlap
  np.testing.assert_array_equal(covered.astype(bool), mask)
  # the loop stops as soon as the target is reached: without the last accepted span it was not
  if accepted:
    s, e = accepted[-1]
    assert mask.sum() - (e - s) < math.ceil(0.3 * n)


@SETTINGS
@given(n=st.integers(1, 200), seed=st.integers(0, 2**32 - 1))
def test_rejection_and_eligibility_rules(n, seed):
  """Replays the trace against docs/reference.md §4 step 1: starts come from the eligible set; a draw overlapping a selected
  word is rejected; an accepted span removes its indices and the index after it; L = 0 removes its start."""
  trace = []
  select_spans(n, interleave.pattern_rng(seed, 0, 11), trace=trace)
  eligible, mask = set(range(n)), np.zeros(n, bool)
  for s, length, ok in trace:
    assert s in eligible
    e = min(s + length, n)
    assert ok == (not mask[s:e].any())
    if ok:
      mask[s:e] = True
      eligible -= set(range(s, e)) | {e}


def test_drawn_span_lengths_follow_poisson_10():
  lengths, accepted = [], []
  for seed in range(300):
    trace = []
    select_spans(1000, interleave.pattern_rng(seed, 0, 1), trace=trace)
    lengths += [length for _, length, _ in trace]
    accepted += [length for s, length, ok in trace if ok and s + length <= 1000]
  lengths = np.asarray(lengths)
  assert len(lengths) > 8000
  assert abs(lengths.mean() - 10) < 0.15 and abs(lengths.var() - 10) < 0.6
  ks = np.arange(0, 30)
  pmf = np.exp(ks * np.log(10) - 10 - np.array([math.lgamma(k + 1) for k in ks]))
  freq = np.bincount(lengths, minlength=40)[:30] / len(lengths)
  assert np.abs(freq - pmf).max() < 0.01
  # accepted (untruncated) spans are slightly shorter than the draws (long ones overlap more often)
  assert 8.5 < np.mean(accepted) <= lengths.mean() + 0.1


def test_same_seed_same_pattern_and_epochs():
  n = 120
  a = select_spans(n, interleave.pattern_rng(3, 0, 99))
  np.testing.assert_array_equal(a, select_spans(n, interleave.pattern_rng(3, 0, 99)))
  per_epoch = {select_spans(n, interleave.pattern_rng(3, e, 99)).tobytes() for e in range(6)}
  assert len(per_epoch) == 6
  static = {select_spans(n, interleave.pattern_rng(3, e, 99, mode="static")).tobytes() for e in range(6)}
  assert static == {a.tobytes()}
  assert select_spans(n, interleave.pattern_rng(4, 0, 99)).tobytes() != a.tobytes()
  assert select_spans(n, interleave.pattern_rng(3, 0, 98)).tobytes() != a.tobytes()
  with pytest.raises(ValueError):
    interleave.pattern_rng(0, 0, 0, mode="random")


def test_document_patterns_depend_on_doc_id_not_record_order():
  words = [f" w{i}" for i in range(60)]
  times = [(i * 0.5, i * 0.5 + 0.4) for i in range(60)]
  doc = _doc(words, times, np.arange(750) % 500, np.ones(750), doc_id="a.flac")
  s1 = pieces_to_string(interleave.interleave(doc, seed=5, epoch=2))
  assert s1 == pieces_to_string(interleave.interleave(doc, seed=5, epoch=2))
  doc.doc_id = "b.flac"
  assert s1 != pieces_to_string(interleave.interleave(doc, seed=5, epoch=2))


# Hand-worked construction. Units are deduplicated with durations in 0.04 s frames; unit j ends at
# cumsum(durations)[j] * 0.04: durations [2, 3, 1, 4, 5, 1, 2, 2] -> ends 0.08 0.2 0.24 0.4 0.6 0.64 0.72 0.8
UNITS = [10, 11, 12, 13, 14, 15, 16, 17]
DURS = [2, 3, 1, 4, 5, 1, 2, 2]
WORDS = [" The", " cat", " sat", " on", " the", " mat"]
TIMES = [(0.0, 0.1), (0.2, 0.3), (0.3, 0.4), (0.45, 0.55), (0.6, 0.7), (0.72, 0.8)]


@pytest.mark.parametrize("spoken, expected", [
    # " cat" spoken: start 0.2 (bisect-left: <Un11> ends exactly at 0.2, included) .. end 0.3 -> <Un11><Un12>
    ([0, 1, 0, 0, 0, 0], "<text> The<speech><Un11><Un12><text> sat on the mat"),
    # " cat sat": 0.2 .. 0.4; <Un13> ends exactly at 0.4 (bisect-right: included)
    ([0, 1, 1, 0, 0, 0], "<text> The<speech><Un11><Un12><Un13><text> on the mat"),
    # " on": 0.45 .. 0.55, no unit ends inside -> an empty speech run still gets its markers
    ([0, 0, 0, 1, 0, 0], "<text> The cat sat<speech><text> the mat"),
    # " the mat" at the end: no trailing marker; the gap 0.7..0.72 inside the span keeps <Un16> (ends 0.72)
    ([0, 0, 0, 0, 1, 1], "<text> The cat sat on<speech><Un14><Un15><Un16><Un17>"),
    # starts with speech: " The" 0.0 .. 0.1 -> <Un10> (0.08); <Un11> ends at 0.2 > 0.1, dropped
    ([1, 0, 0, 0, 0, 0], "<speech><Un10><text> cat sat on the mat"),
    ([0, 0, 0, 0, 0, 0], "<text> The cat sat on the mat"),
    ([1, 1, 1, 1, 1, 1], "<speech>" + "".join(f"<Un{u}>" for u in UNITS)),
    # two spans touching a text word between them; units bordering text outside spans are dropped
    # " sat" 0.3 .. 0.4 takes only <Un13>: <Un11>, <Un12> end inside the text word " cat"
    ([1, 0, 1, 0, 1, 0], "<speech><Un10><text> cat<speech><Un13><text> on<speech><Un14><Un15><text> mat"),
])
def test_hand_worked_strings(spoken, expected):
  d = _doc(WORDS, TIMES, UNITS, DURS)
  pieces = build_pieces(d.text, d.word_offsets, d.word_starts, d.word_ends, d.units, d.durations,
                        np.asarray(spoken, bool))
  assert pieces_to_string(pieces) == expected


def test_unit_end_times_match_float64_cumsum():
  np.testing.assert_array_equal(interleave.unit_end_times(DURS), np.cumsum(DURS) * 0.04)
  assert interleave.unit_end_times([3])[0] == 3 * 0.04  # 0.12000000000000001, compared as slamkit does


def _reference_string(words, times, units, durations, spoken):
  """docs/reference.md §4 step 2 read literally: a walk over words, one run at a time."""
  t = list(np.cumsum(durations) * 0.04)
  out, cur = "", []
  for i, w in enumerate(words):
    mod = "speech" if spoken[i] else "text"
    if i == 0:
      out += f"<{mod}>"
    cur.append(i)
    last = i == len(words) - 1
    if last or bool(spoken[i + 1]) != bool(spoken[i]):
      if mod == "text":
        out += "".join(words[j] for j in cur)
      else:
        lo, hi = bisect_left(t, times[cur[0]][0]), bisect_right(t, times[cur[-1]][1])
        out += "".join(f"<Un{u}>" for u in units[lo:hi])
      if not last:
        out += "<speech>" if mod == "text" else "<text>"
      cur = []
  return out


@st.composite
def aligned_docs(draw):
  n_units = draw(st.integers(1, 60))
  durations = draw(st.lists(st.integers(1, 5), min_size=n_units, max_size=n_units))
  units = draw(st.lists(st.integers(0, 499), min_size=n_units, max_size=n_units))
  total = sum(durations)
  n_words = draw(st.integers(1, 25))
  # word edges on the 0.02 s grid (Whisper-like), some exactly on unit ends, sorted and possibly touching
  edges = sorted(draw(st.lists(st.integers(0, 2 * total), min_size=2 * n_words, max_size=2 * n_words)))
  times = [(edges[2 * i] * 0.02, edges[2 * i + 1] * 0.02) for i in range(n_words)]
  words = [draw(st.sampled_from([" a", " cat", " é", " 12", "-", " don't", ""])) for _ in range(n_words)]
  spoken = draw(st.lists(st.booleans(), min_size=n_words, max_size=n_words))
  return words, times, units, durations, spoken


@SETTINGS
@given(aligned_docs())
def test_build_pieces_matches_literal_reference(case):
  words, times, units, durations, spoken = case
  d = _doc(words, times, units, durations)
  pieces = build_pieces(d.text, d.word_offsets, d.word_starts, d.word_ends, d.units, d.durations,
                        np.asarray(spoken, bool))
  assert pieces_to_string(pieces) == _reference_string(words, times, units, durations, spoken)


def test_interleaved_share_of_words():
  """Over many documents about 30% of the words are spoken (at least ceil(0.3 n) each, overshoot by spans)."""
  fracs = []
  for seed in range(200):
    n = 40
    fracs.append(select_spans(n, interleave.pattern_rng(seed, 0, 5)).mean())
  assert 0.3 <= np.mean(fracs) < 0.45


def test_float_edges_follow_slamkit_arithmetic():
  """35 * 0.04 = 1.4000000000000001 in float64: a word ending at 1.4 does not take the unit ending 'at 1.4',
  a word starting at 1.4 does (slamkit compares cumsum(duration) * 0.04 with the alignment times)."""
  d = _doc([" a", " b"], [(0.0, 1.4), (1.4, 1.48)], [1, 2, 3], [35, 1, 1])
  both = lambda spoken: pieces_to_string(build_pieces(d.text, d.word_offsets, d.word_starts, d.word_ends,  # noqa
                                                      d.units, d.durations, np.asarray(spoken, bool)))
  assert both([1, 0]) == "<speech><text> b"
  assert both([0, 1]) == "<text> a<speech><Un1><Un2><Un3>"
