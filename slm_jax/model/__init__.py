"""Decoder model: config, NNX modules, sharded creation."""
from slm_jax.model.config import PRESETS, ModelConfig, preset
from slm_jax.model.transformer import CausalLM, init_cache
from slm_jax.model.create import abstract_model, create_model, model_shardings

__all__ = ["PRESETS", "ModelConfig", "preset", "CausalLM", "init_cache", "abstract_model", "create_model",
           "model_shardings"]
