"""Data splitting, devices and the chapter 00 widget's plain functions."""

import numpy as np
import pytest
import torch

import nnpar_lite as nl
from nnpar_lite import data
from nnpar_lite.experiments.start_here import loss_averages
from nnpar_lite.widgets.start_here import loss_average_figure


def test_article_data_is_seed_4_1():
    X, Y = data.article_data()
    assert X.shape == (4, 2) and Y.shape == (4, 2)
    np.testing.assert_array_equal(Y, X + 1)


@pytest.mark.parametrize("n, k", [(10, 3), (7, 7), (100, 4), (5, 1)])
def test_even_shard_sizes(n, k):
    sizes = data.even_shard_sizes(n, k)
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1 and len(sizes) == k


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("skew", [0.0, 0.3, 1.0])
def test_skewed_shard_sizes(k, skew):
    sizes = data.skewed_shard_sizes(60, k, skew)
    assert sum(sizes) == 60 and min(sizes) >= 1 and len(sizes) == k
    if skew == 0.0:
        assert max(sizes) - min(sizes) <= 1
    else:
        assert sizes == sorted(sizes)


def test_split_by_sizes_is_the_concatenation():
    x = np.arange(10)
    shards = data.split_by_sizes(x, [1, 3, 6])
    assert [len(s) for s in shards] == [1, 3, 6]
    np.testing.assert_array_equal(np.concatenate(shards), x)


@pytest.mark.parametrize("call, exc, word", [
    (lambda: data.even_shard_sizes(2, 3), ValueError, "2 samples"),
    (lambda: data.even_shard_sizes(5, 0), ValueError, "at least one worker"),
    (lambda: data.even_shard_sizes(5.0, 2), TypeError, "num_samples"),
    (lambda: data.skewed_shard_sizes(10, 2, 1.5), ValueError, "skew"),
    (lambda: data.split_by_sizes(np.arange(5), [2, 2]), ValueError, "add up to 4"),
    (lambda: data.split_by_sizes(np.arange(5), [5, 0]), ValueError, "worker 1"),
    (lambda: data.split_by_sizes(np.arange(5), [2.5, 2.5]), TypeError, "worker 0"),
])
def test_bad_splits(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


def test_pick_device():
    assert nl.pick_device("cpu") == torch.device("cpu")
    assert nl.pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            nl.pick_device("cuda")


def test_to_device_converts_numpy_and_keeps_structure(device):
    moved = nl.to_device({"a": np.ones(2), "b": [torch.zeros(3)]}, device)
    assert moved["a"].device.type == device.type and isinstance(moved["b"], list)
    nl.synchronize(device)


def test_loss_averages_widget_function():
    r = loss_averages(4, 0.8)
    assert sum(r["sizes"]) == 60
    assert r["weighted by size"] == pytest.approx(r["true mean"], abs=1e-12)
    assert abs(r["plain mean (article)"] - r["true mean"]) > 0.05
    even = loss_averages(4, 0.0)
    assert even["plain mean (article)"] == pytest.approx(even["true mean"], abs=1e-12)
    fig, _ = loss_average_figure(2, 0.5)
    assert len(fig.axes) == 1
