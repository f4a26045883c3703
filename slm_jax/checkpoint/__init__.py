"""Checkpoints: HF safetensors in and out, slamkit import, Orbax save/restore with metadata checks."""
