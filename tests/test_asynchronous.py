"""Asynchronous SGD (chapter 09): stale gradients simulated, and a parameter server over real
processes. References: torch.optim.SGD on the same batches (τ = 0), the delay-difference
equation's stability bound checked by running it, and the real run replayed in one process."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from nnpar_lite.asynchronous import delayed_quadratic, largest_stable_lr_under_staleness, stale_sgd
from nnpar_lite.distributed import launch
from nnpar_lite.experiments import communication_efficiency as comm
from nnpar_lite.models import mlp
from nnpar_lite.util import max_abs_difference

CONFIG = dict(sizes=(64, 16, 10), lr=0.3, updates=40, batch=16, batches=30, delays=[0.0, 0.004], **{"head start": 3})


def batches(n=25, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 6, generator=gen, dtype=torch.float64), torch.randint(0, 3, (8,), generator=gen))
            for _ in range(n)]


def model():
    return mlp((6, 7, 3), seed=1, dtype=torch.float64)


def test_fresh_gradients_are_synchronous_sgd_bit_for_bit():
    ours, reference = model(), model()
    stale_sgd(ours, batches(), 0.4, staleness=0)
    opt = torch.optim.SGD(reference.parameters(), lr=0.4)
    for x, y in batches():
        opt.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        opt.step()
    assert max_abs_difference(ours, reference) == 0.0


def test_staleness_one_uses_the_parameters_of_one_update_before():
    """τ = 1 written out: the gradient of step t is taken at θ_{t−1} (θ_0 for t = 0)."""
    ours, reference = model(), model()
    stale_sgd(ours, batches(6), 0.4, staleness=1)
    params = list(reference.parameters())
    previous = [p.detach().clone() for p in params]
    for x, y in batches(6):
        current = [p.detach().clone() for p in params]
        old = model()
        with torch.no_grad():
            for p, v in zip(old.parameters(), previous):
                p.copy_(v)
        grads = torch.autograd.grad(F.cross_entropy(old(x), y), list(old.parameters()))
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(0.4 * g)
        previous = current
    assert max_abs_difference(ours, reference) < 1e-12
    fresh = model()
    stale_sgd(fresh, batches(6), 0.4, staleness=0)
    assert max_abs_difference(ours, fresh) > 1e-4           # and staleness does change the result


@pytest.mark.parametrize("tau", [0, 1, 2, 5, 12])
def test_the_stability_bound_is_where_stale_descent_starts_to_diverge(tau):
    bound = largest_stable_lr_under_staleness(1.0, tau)
    below = delayed_quadratic(0.95 * bound, tau, steps=3000)
    above = delayed_quadratic(1.05 * bound, tau, steps=3000)
    assert max(abs(t) for t in below[-50:]) < max(abs(t) for t in below[:50])
    assert max(abs(t) for t in above[-50:]) > 10
    assert largest_stable_lr_under_staleness(2.0, tau) == pytest.approx(bound / 2)


def test_the_bound_for_small_and_large_staleness():
    assert largest_stable_lr_under_staleness(1.0, 0) == pytest.approx(2.0)
    assert largest_stable_lr_under_staleness(1.0, 1) == pytest.approx(1.0)
    assert largest_stable_lr_under_staleness(1.0, 100) == pytest.approx(math.pi / 201, rel=1e-4)


def test_bad_staleness_is_refused():
    for bad in (-1, 1.5, True, [0, 2, 0], [0, 0]):
        with pytest.raises(ValueError, match="staleness"):
            stale_sgd(model(), batches(3), 0.1, bad)
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="curvature"):
            largest_stable_lr_under_staleness(bad, 1)


@functools.lru_cache(maxsize=None)
def server_run():
    """A server and two workers, the second slower: one launch."""
    return launch(comm.parameter_server_run, 3, CONFIG, timeout=180)


def test_parameter_server_applies_every_update_and_records_its_staleness():
    server, *workers = server_run()
    records = server["records"]
    assert len(records) == CONFIG["updates"]
    assert sum(w["sent"] for w in workers) == CONFIG["updates"] + len(workers)   # one dropped gradient each
    assert {r["worker"] for r in records} == {1, 2}
    for t, r in enumerate(records):
        assert r["staleness"] == t - r["computed on"] and 0 <= r["staleness"] <= t


def test_parameter_server_run_equals_its_replay():
    """The real run, replayed by the simulation with the batches in the order the server applied
    them and the staleness each had, ends with the same parameters. Worker 2 had to wait for
    worker 1's third update before its first gradient, so that gradient is at least 3 updates
    stale whatever the timing; replayed as if fresh, the run ends elsewhere."""
    server = server_run()[0]
    first_of_worker_2 = next(r for r in server["records"] if r["worker"] == 2)
    assert first_of_worker_2["computed on"] == 0 and first_of_worker_2["staleness"] >= 3, first_of_worker_2
    replayed = comm.replay_parameter_server(server["records"], CONFIG)
    assert max_abs_difference(list(replayed.parameters()), server["params"]) < 1e-12
    fresh = comm.replay_parameter_server([dict(r, staleness=0) for r in server["records"]], CONFIG)
    assert max_abs_difference(list(fresh.parameters()), server["params"]) > 1e-6


def test_a_parameter_without_a_gradient_is_named_and_nothing_changes():
    class WithUnused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = torch.nn.Linear(6, 3).double(), torch.nn.Linear(6, 3).double()

        def forward(self, x):
            return self.used(x)

    net = WithUnused()
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError, match="'unused.weight' got no gradient from batch 0"):
        stale_sgd(net, batches(3), 0.1, 1)
    assert max_abs_difference(list(net.parameters()), before) == 0.0


def test_frozen_parameters_stay_and_the_others_follow_torchs_sgd():
    ours, reference = model(), model()
    for net in (ours, reference):
        net[0].bias.requires_grad_(False)
    stale_sgd(ours, batches(), 0.4, staleness=0)
    opt = torch.optim.SGD([p for p in reference.parameters() if p.requires_grad], lr=0.4)
    for x, y in batches():
        opt.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        opt.step()
    assert max_abs_difference(ours, reference) == 0.0
    assert torch.equal(ours[0].bias, model()[0].bias)
