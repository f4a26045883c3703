"""Evaluation (docs/reference.md §6): sequence scoring, the benchmarks on their own layouts, generation, GenPPL.

scoring     length-bucketed, mesh-sharded scoring with `slm_jax.model.logprobs.token_logprobs`
zerospeech  gold.csv and the official sWUGGY / sBLIMP arithmetic
storycloze  StoryCloze naming conventions, slamkit pre-paired folders, cross-modal sets
inputs      units from a slamkit features JSONL or from audio
benchmarks  benchmark -> token sequences -> scores -> results
generate    compiled KV-cache sampling
genppl      GenPPL and auto-BLEU
loading     Orbax / HF checkpoints for evaluation
run         what the tools and the notebook (tools/make_notebook.py) call
"""
