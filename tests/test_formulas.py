"""The four formulas against an independent numpy re-computation, on every device."""

import copy

import numpy as np
import pytest
import torch

import nnpar_lite as nl
from nnpar_lite import trees

RNG = np.random.default_rng(0)
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}


def make_tree(rng, dtype):
    """A nested tree with leaves of several shapes, one of them empty-ish and one 0-d."""
    return {
        "fc": {"weight": rng.standard_normal((5, 3)).astype(dtype), "bias": rng.standard_normal(5).astype(dtype)},
        "layers": [rng.standard_normal((2, 3, 4)).astype(dtype), rng.standard_normal(()).astype(dtype)],
    }


def as_backend(tree, backend, device):
    if backend == "numpy":
        return tree
    return nl.to_device(tree, device)


def to_numpy(tree):
    return [np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x) for _, x in trees.leaves_with_paths(tree)]


def reference_mean(worker_trees, weights):
    """Σ w_i x_i / Σ w_i in float64 numpy, leaf by leaf: the independent re-computation."""
    w = np.ones(len(worker_trees)) if weights is None else np.asarray(weights, dtype=np.float64)
    leaves = [to_numpy(t) for t in worker_trees]
    return [sum(w[i] * leaves[i][j].astype(np.float64) for i in range(len(leaves))) / w.sum()
            for j in range(len(leaves[0]))]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("workers", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("formula", [nl.aggregate_gradients, nl.average_parameters])
def test_weighted_mean_matches_numpy(formula, weighted, workers, dtype, backend, device):
    if backend == "numpy" and device.type != "cpu":
        pytest.skip("numpy lives on the CPU")
    rng = np.random.default_rng(workers)
    raw = [make_tree(rng, dtype) for _ in range(workers)]
    weights = list(rng.integers(1, 50, size=workers)) if weighted else None
    result = formula([as_backend(t, backend, device) for t in raw], weights)
    for path_leaf, got, want in zip(trees.leaves_with_paths(result), to_numpy(result), reference_mean(raw, weights)):
        leaf = path_leaf[1]
        assert (isinstance(leaf, torch.Tensor)) == (backend == "torch")
        if backend == "torch":
            assert leaf.device.type == device.type
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **TOL[dtype])


def test_large_leaf(device):
    """A leaf of several MB whose length is odd: no hidden chunking leaves a tail unsummed."""
    numel = 3 * 2**20 + 12345
    xs = [torch.randn(numel, dtype=torch.float64, device=device) for _ in range(3)]
    got = nl.aggregate_gradients(xs, [1, 2, 5])
    want = (1 * xs[0] + 2 * xs[1] + 5 * xs[2]) / 8
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_numpy_large_and_non_contiguous():
    xs = [RNG.standard_normal((700, 900)).T for _ in range(3)]  # transposed: not C-contiguous
    out = np.empty((700, 900)).T
    got = nl.aggregate_gradients(xs, out=out)
    assert got is out
    np.testing.assert_allclose(out, sum(xs) / 3, rtol=1e-12, atol=1e-12)


def test_out_is_filled_and_returned(device):
    grads = [{"w": torch.randn(4, 3, device=device), "b": torch.randn(3, device=device)} for _ in range(3)]
    out = {"w": torch.full((4, 3), 7.0, device=device), "b": torch.full((3,), 7.0, device=device)}
    ids = {k: v.data_ptr() for k, v in out.items()}
    got = nl.aggregate_gradients(grads, [3, 1, 1], out=out)
    assert got is out and {k: v.data_ptr() for k, v in out.items()} == ids
    torch.testing.assert_close(out["w"], (3 * grads[0]["w"] + grads[1]["w"] + grads[2]["w"]) / 5)


def test_out_non_contiguous_torch():
    xs = [torch.randn(6, 4, dtype=torch.float64) for _ in range(2)]
    out = torch.zeros(4, 6, dtype=torch.float64).t()
    nl.aggregate_gradients(xs, out=out)
    torch.testing.assert_close(out, (xs[0] + xs[1]) / 2)


def test_modules_are_averaged_by_parameters_and_out_module_is_written():
    torch.manual_seed(0)
    replicas = [torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
                for _ in range(3)]
    got = nl.average_parameters(replicas, [1, 1, 2])
    names = [n for n, _ in replicas[0].named_parameters()]
    assert list(got) == names  # parameters only: running_mean, num_batches_tracked are buffers
    for name in names:
        want = sum(w * dict(r.named_parameters())[name].detach() for w, r in zip([1, 1, 2], replicas)) / 4
        torch.testing.assert_close(got[name], want)
    target = copy.deepcopy(replicas[0])
    assert nl.average_parameters(replicas, [1, 1, 2], out=target) is target
    for name, p in target.named_parameters():
        torch.testing.assert_close(p.detach(), got[name])
        assert p.requires_grad  # still a trainable parameter


def test_state_dicts_average():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    got = nl.average_parameters([a.state_dict(), b.state_dict()])
    torch.testing.assert_close(got["weight"], (a.weight + b.weight).detach() / 2)


def test_dict_key_order_does_not_matter():
    x = {"a": np.ones(2), "b": np.zeros(3)}
    y = {"b": np.ones(3), "a": np.zeros(2)}
    got = nl.aggregate_gradients([x, y])
    np.testing.assert_allclose(got["a"], [0.5, 0.5])
    np.testing.assert_allclose(got["b"], [0.5, 0.5, 0.5])


# ------------------------------------------------------------------ losses
def test_average_losses_matches_numpy():
    losses = [0.5, 2.0, 3.25]
    assert nl.average_losses(losses) == pytest.approx(np.mean(losses), rel=1e-15)
    assert nl.average_losses(losses, [10, 1, 3]) == pytest.approx(np.average(losses, weights=[10, 1, 3]), rel=1e-15)
    assert isinstance(nl.average_losses(np.array([1.0, 2.0])), np.floating)


def test_weighted_average_of_shard_means_is_the_full_batch_mean(device):
    """Seed 3.1 with uneven shards: weights = shard sizes recover the mean over all samples,
    and autograd through average_losses gives the full-batch gradient."""
    torch.manual_seed(1)
    x, y = torch.randn(10, 3, device=device), torch.randn(10, device=device)
    w = torch.randn(3, device=device, requires_grad=True)
    shards = [slice(0, 1), slice(1, 4), slice(4, 10)]
    shard_losses = [((x[s] @ w - y[s]) ** 2).mean() for s in shards]
    sizes = [s.stop - s.start for s in shards]
    weighted = nl.average_losses(shard_losses, sizes)
    full = ((x @ w - y) ** 2).mean()
    torch.testing.assert_close(weighted, full)
    (g_weighted,) = torch.autograd.grad(weighted, w, retain_graph=True)
    (g_full,) = torch.autograd.grad(full, w, retain_graph=True)
    torch.testing.assert_close(g_weighted, g_full)
    unweighted = nl.average_losses(shard_losses)  # the mean of means is not the full-batch mean
    assert abs(unweighted.item() - full.item()) > 1e-3


def test_average_losses_gradient_is_the_weight_share():
    losses = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (1.0, 4.0, 2.0)]
    nl.average_losses(losses, [1, 2, 5]).backward()
    assert [l.grad.item() for l in losses] == pytest.approx([1 / 8, 2 / 8, 5 / 8], rel=1e-15)


# --------------------------------------------------------------------- SGD
def test_sgd_step_matches_numpy(device):
    rng = np.random.default_rng(3)
    p, g = make_tree(rng, np.float64), make_tree(rng, np.float64)
    for backend in ("numpy", "torch"):
        params, grads = as_backend(p, backend, device), as_backend(g, backend, device)
        new = nl.sgd_step(params, grads, 0.1)
        for got, p0, g0 in zip(to_numpy(new), to_numpy(p), to_numpy(g)):
            np.testing.assert_allclose(got, p0 - 0.1 * g0, rtol=1e-15, atol=1e-15)
        np.testing.assert_array_equal(to_numpy(params)[0], to_numpy(p)[0])  # params untouched


def test_sgd_step_in_place_on_parameters():
    model = torch.nn.Linear(3, 2)
    params = {n: p for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in params.items()}
    grads = {n: torch.ones_like(p) for n, p in params.items()}
    nl.sgd_step(params, grads, 0.5, out=params)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] - 0.5)


def test_cpu_and_cuda_give_the_same_answer():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    xs = [torch.randn(1000, 17, dtype=torch.float64) for _ in range(3)]
    cpu = nl.aggregate_gradients(xs, [1, 2, 3])
    gpu = nl.aggregate_gradients([x.cuda() for x in xs], [1, 2, 3])
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-12, atol=1e-12)
