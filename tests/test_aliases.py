"""The names chapters and readers use stay importable where they were, each the one definition
that now lives elsewhere (collectives, data, fsdp, data_parallel_overlap): an alias, not a copy."""

import importlib

import pytest

ALIASES = [   # (module, name there) → (module, name of the one definition)
    (("data_parallel", "ring_allreduce"), ("collectives", "ring_allreduce")),
    (("data_parallel", "allreduce_mean_"), ("collectives", "allreduce_mean_")),
    (("data_parallel", "plan_buckets"), ("collectives", "plan_buckets")),
    (("data_parallel", "split_batch"), ("data", "split_batch")),
    (("data_parallel", "DataParallel"), ("data_parallel_overlap", "DataParallel")),
    (("data_parallel", "plan_buckets_like_ddp"), ("data_parallel_overlap", "plan_buckets_like_ddp")),
    (("sharding", "ring_reduce_scatter"), ("collectives", "ring_reduce_scatter")),
    (("sharding", "ring_all_gather"), ("collectives", "ring_all_gather")),
    (("sharding", "reduce_scatter"), ("collectives", "reduce_scatter")),
    (("sharding", "all_gather"), ("collectives", "all_gather")),
    (("sharding", "chunk_size"), ("collectives", "chunk_size")),
    (("sharding", "padded"), ("collectives", "padded")),
    (("sharding", "all_reduce_mean"), ("collectives", "allreduce_mean_")),
    (("sharding", "FullyShardedDataParallel"), ("fsdp", "FullyShardedDataParallel")),
    (("sharding", "gather_full_params"), ("fsdp", "gather_full_params")),
    (("sharding", "owns_parameters"), ("fsdp_units", "owns_parameters")),
    (("collectives", "positive_number"), ("util", "positive_number")),
    (("collectives", "gather_along"), ("autograd_collectives", "gather_along")),
    (("collectives", "reduce_scatter_along"), ("autograd_collectives", "reduce_scatter_along")),
    (("collectives", "all_to_all_along"), ("autograd_collectives", "all_to_all_along")),
    (("collectives", "exchange"), ("autograd_collectives", "exchange")),
    (("collectives", "all_gather_dim"), ("autograd_collectives", "all_gather_dim")),
    (("collectives", "reduce_scatter_dim"), ("autograd_collectives", "reduce_scatter_dim")),
]


def _get(module: str, name: str):
    return getattr(importlib.import_module(f"nnpar_lite.{module}"), name)


@pytest.mark.parametrize("alias, definition", ALIASES, ids=lambda a: ".".join(a))
def test_an_old_name_is_the_one_definition(alias, definition):
    assert _get(*alias) is _get(*definition)


def test_from_imports_reach_the_names_defined_elsewhere():
    from nnpar_lite.collectives import exchange, gather_along  # noqa: F401
    from nnpar_lite.sharding import FullyShardedDataParallel, all_gather, reduce_scatter  # noqa: F401


def test_an_unknown_name_is_still_an_attribute_error():
    for module in ("collectives", "sharding"):
        with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
            _get(module, "nothing_here")


def test_the_dead_re_exports_are_gone():
    """data_parallel.mlp lives in models; pipeline.peak_activations in costmodel."""
    assert not hasattr(importlib.import_module("nnpar_lite.data_parallel"), "mlp")
    assert not hasattr(importlib.import_module("nnpar_lite.pipeline"), "peak_activations")
