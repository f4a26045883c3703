"""slm_jax: interleaved speech-text language models in JAX / Flax NNX (SIMS, arXiv 2504.02398)."""
__version__ = "0.1.0"
