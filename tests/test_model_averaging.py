"""Model averaging (seed 3.2): local SGD against synchronous SGD, average_parameters_ against
PyTorch's PeriodicModelAverager and an all-gather re-computation, permutation symmetry."""

import numpy as np
import pytest
import torch

from nnpar_lite import model_averaging as ma
from nnpar_lite.costmodel import communication_per_epoch
from nnpar_lite.data import digits, dirichlet_split, iid_split
from nnpar_lite.experiments import model_averaging as max_
from nnpar_lite.models import mlp
from nnpar_lite.distributed import launch


@pytest.fixture(scope="module")
def data():
    X, y = digits()
    return torch.from_numpy(X[:600]).double(), torch.from_numpy(y[:600])


def fresh():
    return mlp((64, 16, 10), seed=0, dtype=torch.float64)


def largest_difference(a, b):
    with torch.no_grad():
        return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("alpha, workers", [(0.1, 3), (1.0, 4), (None, 2)])
@pytest.mark.parametrize("momentum, policy", [(0.0, "local"), (0.9, "local"), (0.9, "average")])
def test_h1_equals_synchronous_sgd(data, alpha, workers, momentum, policy):
    x, y = data
    shards = iid_split(len(y), workers) if alpha is None else dirichlet_split(y.numpy(), workers, alpha)
    averaged = ma.local_sgd(x, y, shards, local_steps=1, rounds=15, lr=0.2, momentum=momentum,
                            momentum_policy=policy, model=fresh())["model"]
    reference = max_.synchronous_sgd(x, y, shards, steps=15, lr=0.2, momentum=momentum, model=fresh())["model"]
    assert largest_difference(averaged, reference) < 1e-12


def test_resetting_momentum_is_not_synchronous_sgd(data):
    x, y = data
    shards = dirichlet_split(y.numpy(), 3, 0.5)
    averaged = ma.local_sgd(x, y, shards, local_steps=1, rounds=15, lr=0.2, momentum=0.9,
                            momentum_policy="reset", model=fresh())["model"]
    reference = max_.synchronous_sgd(x, y, shards, steps=15, lr=0.2, momentum=0.9, model=fresh())["model"]
    assert largest_difference(averaged, reference) > 1e-3


def test_larger_h_takes_another_path_and_drifts_more_when_non_iid(data):
    x, y = data
    iid, skewed = iid_split(len(y), 4), dirichlet_split(y.numpy(), 4, 0.1)
    h8 = ma.local_sgd(x, y, skewed, local_steps=8, rounds=2, lr=0.2, model=fresh())
    sync = max_.synchronous_sgd(x, y, skewed, steps=16, lr=0.2, model=fresh())["model"]
    assert largest_difference(h8["model"], sync) > 1e-3
    drift_iid = ma.local_sgd(x, y, iid, local_steps=8, rounds=2, lr=0.2, model=fresh())["history"][-1]["drift"]
    assert h8["history"][-1]["drift"] > 2 * drift_iid


def test_permuted_network_computes_the_same_function():
    model = mlp((64, 16, 10), seed=3, dtype=torch.float64)
    permuted = ma.permute_hidden_units(model, torch.randperm(16, generator=torch.Generator().manual_seed(1)))
    x = torch.randn(50, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), permuted(x), rtol=1e-12, atol=1e-12)
    assert largest_difference(model, permuted) > 0.1


def test_communication_per_epoch():
    assert communication_per_epoch(1000, 4, 1) == {"rounds": 1.0, "bytes": 2 * 3 / 4 * 1000 * 4}
    assert communication_per_epoch(1000, 4, 8)["bytes"] == 2 * 3 / 4 * 1000 * 4 / 8
    assert communication_per_epoch(2410, 4, 4, steps_per_epoch=12)["bytes"] == 43380


def test_dirichlet_split_covers_every_sample_once_and_skews_labels():
    y = digits()[1][:1500]
    for alpha in (100.0, 0.1):
        shards = dirichlet_split(y, 4, alpha, seed=2)
        together = np.sort(np.concatenate(shards))
        np.testing.assert_array_equal(together, np.arange(len(y)))
        assert min(len(s) for s in shards) >= 1
    def label_entropy(shards):
        entropies = []
        for s in shards:
            p = np.bincount(y[s], minlength=10) / len(s)
            entropies.append(-(p[p > 0] * np.log(p[p > 0])).sum())
        return np.mean(entropies)
    assert label_entropy(dirichlet_split(y, 4, 100.0)) > 2.2 > 1.5 > label_entropy(dirichlet_split(y, 4, 0.1))


@pytest.mark.parametrize("call, exc, word", [
    (lambda x, y: ma.local_sgd(x, y, iid_split(len(y), 2), local_steps=0, rounds=1, lr=0.1), ValueError, "local_steps"),
    (lambda x, y: ma.local_sgd(x, y, iid_split(len(y), 2), local_steps=1.5, rounds=1, lr=0.1), ValueError, "local_steps"),
    (lambda x, y: ma.local_sgd(x, y, iid_split(len(y), 2), local_steps=1, rounds=1, lr=0.1, momentum_policy="x"),
     ValueError, "momentum_policy"),
    (lambda x, y: ma.local_sgd(x, y, [np.arange(3), np.array([], dtype=int)], local_steps=1, rounds=1, lr=0.1),
     ValueError, "non-empty"),
    (lambda x, y: dirichlet_split(y.numpy(), 3, 0.0), ValueError, "alpha"),
    (lambda x, y: dirichlet_split(y.numpy(), 3, -1.0), ValueError, "alpha"),
    (lambda x, y: dirichlet_split(y.numpy(), 3, float("nan")), ValueError, "alpha"),
    (lambda x, y: dirichlet_split(y.numpy()[:5], 6, 1.0), ValueError, "5 samples"),
    (lambda x, y: iid_split(5, 6), ValueError, "5 samples"),
    (lambda x, y: ma.permute_hidden_units(mlp((64, 16, 10)), [0, 0] + list(range(2, 16))), ValueError, "exactly once"),
])
def test_bad_input(data, call, exc, word):
    with pytest.raises(exc, match=word):
        call(*data)


def test_average_parameters_equals_periodic_model_averager_over_3_ranks():
    reports = launch(max_.local_sgd_against_torch, 3, dict(alpha=0.1, period=3, steps=12), backend="gloo", timeout=120)
    sizes = [r["shard size"] for r in reports]
    assert len(set(sizes)) > 1  # non-IID and uneven
    for r in reports:
        assert len(r["differences"]) == 12 and max(r["differences"]) < 1e-6


def test_weighted_average_parameters_equals_an_all_gather_recomputation():
    assert max(launch(max_.check_weighted_average, 3, backend="gloo", timeout=120)) < 1e-12
