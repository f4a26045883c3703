"""Unit vocoder: a Flax NNX unit HiFi-GAN (textlesslib / slamkit and speechbrain checkpoints), units -> 16 kHz."""
from slm_jax.vocoder.config import VocoderConfig
from slm_jax.vocoder.synth import Vocoder, write_wav

__all__ = ["VocoderConfig", "Vocoder", "write_wav"]
