"""The formulas work a cache-sized block at a time: the block size comes from this machine's
cache, the blocks cover every element once, and a NaN in any block is still named."""

import numpy as np
import pytest
import torch

import nnpar_lite as nl
from nnpar_lite import cache


def test_the_block_size_comes_from_the_cache_read_at_run_time(monkeypatch):
    monkeypatch.setattr(cache, "last_level_cache_bytes", lambda: 32 * 2 ** 20)
    assert cache.block_elements(4, 4) == 32 * 2 ** 20 // (2 * 5 * 4)
    monkeypatch.setattr(cache, "last_level_cache_bytes", lambda: None)
    assert cache.block_elements(4, 4) is None and cache.blocks(10, 4, 4) == [slice(0, 10)]


@pytest.mark.parametrize("numel", [0, 1, 1023, 1024, 5000])
def test_blocks_cover_every_element_once(monkeypatch, numel):
    monkeypatch.setattr(cache, "block_elements", lambda k, size: 1024)
    covered = [i for b in cache.blocks(numel, 2, 4) for i in range(numel)[b]]
    assert covered == list(range(numel))


def test_numpy_arrays_are_worked_on_in_place_and_read_only_inputs_are_only_read(monkeypatch):
    monkeypatch.setattr(cache, "block_elements", lambda k, size: 1024)
    a = np.arange(5000, dtype=np.float32)
    b = np.broadcast_to(np.float32(2.0), (5000,))          # read-only
    out = np.empty(5000, dtype=np.float32)
    result = nl.aggregate_gradients([a, np.ascontiguousarray(b)], out=out)
    assert result is out and np.allclose(out, (a + 2.0) / 2)
    assert nl.aggregate_gradients([a, a.copy()], weights=[1, 3]).dtype == np.float32


def test_a_nan_in_a_later_block_names_its_worker_and_leaf(monkeypatch):
    monkeypatch.setattr(cache, "block_elements", lambda k, size: 1024)
    grads = [{"w": torch.zeros(5000)} for _ in range(3)]
    grads[2]["w"][4321] = float("nan")
    with pytest.raises(ValueError, match="gradient of worker 2, leaf 'w' holds NaN or Inf"):
        nl.aggregate_gradients(grads)


def test_blocked_and_unblocked_sums_agree_on_non_contiguous_leaves(monkeypatch):
    monkeypatch.setattr(cache, "block_elements", lambda k, size: 7)
    xs = [torch.randn(40, 30, dtype=torch.float64).t() for _ in range(3)]
    expected = sum(x for x in xs) / 3
    assert torch.allclose(nl.aggregate_gradients(xs), expected, rtol=0, atol=1e-15)
