"""logical_to_spec: which mesh axes a dimension is split over, and a warning (once per case) when one is dropped."""
import logging

import jax
from jax.sharding import PartitionSpec as P

from slm_jax import sharding


def test_dropped_mesh_axis_warns_once(caplog):
  mesh = sharding.make_mesh(data=2, fsdp=4, tensor=1, devices=jax.devices()[:8])
  with caplog.at_level(logging.WARNING):
    assert sharding.logical_to_spec(("embed", "mlp"), (64, 24), mesh) == P("fsdp", None)  # divides: silent
    assert sharding.logical_to_spec(("batch", None), (8, 3), mesh) == P(("data", "fsdp"), None)
    assert not caplog.records
    assert sharding.logical_to_spec(("embed", None), (6, 8), mesh) == P(None, None)
    assert sharding.logical_to_spec(("batch",), (6,), mesh) == P("data")  # 6 splits 2 ways, not 8
    assert sharding.logical_to_spec(("embed", None), (6, 8), mesh) == P(None, None)  # same case again
  msgs = [r.getMessage() for r in caplog.records]
  assert len(msgs) == 2, msgs
  assert "'embed' of size 6 is not split over mesh axis fsdp=4" in msgs[0] and "replicated" in msgs[0]
  assert "'batch' of size 6" in msgs[1] and "fsdp=4" in msgs[1] and "split over data only" in msgs[1]
