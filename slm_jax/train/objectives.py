"""The objectives a run can train with, by `config.objective`: the one place that maps the name to its
`objective.Objective`. A new objective is a subclass of `Objective` added to `OBJECTIVES`."""
from __future__ import annotations

from slm_jax.train.dpo.objective import DPO
from slm_jax.train.lm import LanguageModelling
from slm_jax.train.objective import Objective

OBJECTIVES: dict[str, type[Objective]] = {"lm": LanguageModelling, "dpo": DPO}


def get(config) -> Objective:
  """The objective of `config` (config.objective, default 'lm'); ValueError naming the known ones otherwise."""
  name = config.get("objective", "lm")
  if name not in OBJECTIVES:
    raise ValueError(f"config.objective={name!r}: expected one of {', '.join(OBJECTIVES)}")
  return OBJECTIVES[name]()
