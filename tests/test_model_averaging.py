"""Model averaging (seed 3.2): local SGD against synchronous SGD; allreduce_parameters_ and
allreduce_parameters_weighted_ over 2, 3 and 4 ranks against PyTorch's PeriodicModelAverager and a
numpy re-computation from every rank's parameters (tests/ma_workers.py), on a sub-group too;
permutation symmetry."""

import numpy as np
import pytest
import torch

from nnpar_lite import model_averaging as ma
from nnpar_lite.costmodel import communication_per_epoch
from nnpar_lite.data import digits, dirichlet_split, iid_split
from nnpar_lite.experiments import model_averaging as max_
from nnpar_lite.models import mlp
from nnpar_lite.distributed import launch

import ma_workers


@pytest.fixture(scope="module")
def data():
    X, y = digits()
    return torch.from_numpy(X[:600]).double(), torch.from_numpy(y[:600])


def fresh():
    return mlp((64, 16, 10), seed=0, dtype=torch.float64)


def torch_sgd_on_all_shards(x, y, shards, *, steps, lr, momentum=0.0):
    """The reference, written out: one torch.optim.SGD step per round on the union of the shards."""
    model, everything = fresh(), np.concatenate(shards)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[everything]), y[everything]).backward()
        optimizer.step()
    return model


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
    reference = torch_sgd_on_all_shards(x, y, shards, steps=15, lr=0.2, momentum=momentum)
    assert largest_difference(averaged, reference) < 1e-12


def test_resetting_momentum_is_not_synchronous_sgd(data):
    x, y = data
    shards = dirichlet_split(y.numpy(), 3, 0.5)
    averaged = ma.local_sgd(x, y, shards, local_steps=1, rounds=15, lr=0.2, momentum=0.9,
                            momentum_policy="reset", model=fresh())["model"]
    reference = torch_sgd_on_all_shards(x, y, shards, steps=15, lr=0.2, momentum=0.9)
    assert largest_difference(averaged, reference) > 1e-3


def test_larger_h_takes_another_path_and_drifts_more_when_non_iid(data):
    x, y = data
    iid, skewed = iid_split(len(y), 4), dirichlet_split(y.numpy(), 4, 0.1)
    h8 = ma.local_sgd(x, y, skewed, local_steps=8, rounds=2, lr=0.2, model=fresh())
    sync = torch_sgd_on_all_shards(x, y, skewed, steps=16, lr=0.2)
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
    (lambda x, y: ma.permute_hidden_units(mlp((64, 16, 10)), [float(i) for i in range(16)]), TypeError, "whole numbers"),
])
def test_bad_input(data, call, exc, word):
    with pytest.raises(exc, match=word):
        call(*data)


@pytest.fixture(scope="module", params=[2, 3, 4], ids=lambda k: f"{k} ranks")
def reports(request):
    """One launch per world size runs every check of tests/ma_workers.py: (world size, per-rank reports)."""
    return request.param, launch(ma_workers.averaging_checks, request.param, backend="gloo", timeout=180)


def test_allreduce_parameters_equals_periodic_model_averager(reports):
    _, per_rank = reports
    assert all(r["periodic averager"] < 1e-6 for r in per_rank)


def test_weighted_average_equals_numpy_over_gathered_parameters(reports):
    """Uneven weights with a rank of weight 0, equal and fractional weights; float64 and float32."""
    _, per_rank = reports
    for r in per_rank:
        for case, gap in r["weighted"].items():
            assert gap < (1e-6 if "float32" in case else 1e-12), (case, gap)
        assert r["experiment, weighted"] < 1e-12


def test_a_module_averages_its_trainable_parameters_only(reports):
    _, per_rank = reports
    for r in per_rank:
        assert r["module"]["mean"] < 1e-12 and r["module"]["alias"] < 1e-12
        assert r["module"]["frozen untouched"] and r["module"]["buffer untouched"]


def test_bad_weights_are_refused_and_change_nothing(reports):
    world_size, per_rank = reports
    for rank, r in enumerate(per_rank):
        assert f"rank {rank}: weight must be a finite number ≥ 0" in r["refusals"]["negative"]
        assert "add up to 0" in r["refusals"]["zero total"]
        assert r["refusals"]["untouched"]


def test_allreduce_on_a_sub_group_of_2_of_3_ranks_leaves_the_third_untouched(reports):
    world_size, per_rank = reports
    if world_size != 3:
        pytest.skip("the sub-group check runs on 3 ranks")
    for rank, r in enumerate(per_rank):
        sub = r["sub-group"]
        if rank == 1:
            assert sub["untouched"]
        else:
            assert not sub["untouched"] and max(sub["gaps"].values()) < 1e-12, sub


def test_the_chapters_local_sgd_run_equals_periodic_model_averager(reports):
    world_size, per_rank = reports
    if world_size != 3:
        pytest.skip("the chapter's run is on 3 ranks")
    assert len({r["experiment, local SGD"]["shard size"] for r in per_rank}) > 1      # non-IID and uneven
    assert all(max(r["experiment, local SGD"]["differences"]) < 1e-6 for r in per_rank)


def test_a_bad_weight_is_refused_without_a_process_group():
    with pytest.raises(ValueError, match="weight must be a finite number"):
        ma.allreduce_parameters_weighted_([torch.zeros(2)], float("nan"))
    with pytest.raises(ValueError, match="weight must be a finite number"):
        ma.allreduce_parameters_weighted_([torch.zeros(2)], True)


def test_the_chapters_synchronous_run_is_torch_sgd(data):
    x, y = data
    shards = dirichlet_split(y.numpy(), 3, 0.5)
    ours = max_.synchronous_sgd(x, y, shards, steps=5, lr=0.2, momentum=0.9, model=fresh(), record=False)["model"]
    assert largest_difference(ours, torch_sgd_on_all_shards(x, y, shards, steps=5, lr=0.2, momentum=0.9)) == 0


def test_the_workers_alone_trained_side_by_side_equal_separate_torch_sgd_runs():
    """The widget trains the K workers alone as one batched computation; written out here, each
    worker on its own shard with torch.optim.SGD, from the same θ_0, must end just as accurate."""
    x, y, x_test, y_test = max_.digits64()
    for workers, alpha, steps in ((3, 0.5, 40), (5, 0.1, 25)):
        expected = []
        for shard in max_.shards_for(workers, alpha):
            model = max_.fresh_model()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
            for _ in range(steps):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x[shard]), y[shard]).backward()
                optimizer.step()
            with torch.no_grad():
                expected.append(float((model(x_test).argmax(1) == y_test).float().mean()))
        assert max_.alone_accuracy(workers, alpha, 0.5, steps) == tuple(expected)
        assert len(set(expected)) > 1
