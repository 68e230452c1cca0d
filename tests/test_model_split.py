"""Chapter 05: pipeline, tensor and spatial splits equal the unsplit model (float64, 1e-10);
the schedules are valid and their idle fraction is the bubble formula."""

import pytest
import torch
import torch.nn.functional as F

from nnpar_lite import costmodel, pipeline, spatial, tensor_parallel as tp
from nnpar_lite.experiments import model_split as msx
from nnpar_lite.experiments import spatial as spx
from nnpar_lite.models import mlp
from nnpar_lite.distributed import launch

TOL = 1e-10


def largest(a, b):
    return max(float((x - y).detach().abs().max()) for x, y in zip(a, b))


# ---------------------------------------------------------------- schedules
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("p, m", [(1, 1), (2, 1), (2, 5), (4, 8), (5, 3), (3, 12)])
def test_schedules_respect_dependencies_and_match_the_bubble(schedule, p, m):
    ops = pipeline.SCHEDULES[schedule](p, m)
    assert all(sorted(o) == sorted([("F", i) for i in range(m)] + [("B", i) for i in range(m)]) for o in ops)
    for stage in ops:  # on each stage every micro-batch's forward comes before its backward
        assert all(stage.index(("F", i)) < stage.index(("B", i)) for i in range(m))
    slots = pipeline.simulate_timeline(ops, 1.0, 2.0)
    at = {(s.op, s.stage, s.microbatch): s for s in slots}
    for s in range(1, p):  # stage s runs a micro-batch's forward after stage s − 1, backward before it
        for i in range(m):
            assert at[("F", s, i)].start >= at[("F", s - 1, i)].end
            assert at[("B", s - 1, i)].start >= at[("B", s, i)].end
    for s in range(p):  # one operation at a time per stage
        mine = sorted((x for x in slots if x.stage == s), key=lambda x: x.start)
        assert all(a.end <= b.start for a, b in zip(mine, mine[1:]))
    assert pipeline.idle_fraction(slots) == pytest.approx(costmodel.bubble_fraction(p, m), abs=1e-12)
    assert max(x.end for x in slots) == pytest.approx(costmodel.pipeline_step_time(p, m, 1.0, 2.0))
    held = pipeline.activations_held(ops)
    assert held == [costmodel.peak_activations(p, m, s, schedule) for s in range(p)]


def test_bubble_and_costs_by_hand():
    assert costmodel.bubble_fraction(4, 8) == 3 / 11
    assert costmodel.bubble_fraction(1, 5) == 0.0
    assert costmodel.ring_allreduce_time(1e6, 4, 1e-5, 1e-9) == pytest.approx(6e-5 + 1.5e6 * 1e-9)
    assert costmodel.ring_allreduce_time(1e6, 1, 1e-5, 1e-9) == 0.0
    with pytest.raises(ValueError, match="num_microbatches"):
        costmodel.bubble_fraction(4, 0)
    with pytest.raises(ValueError, match="schedule"):
        costmodel.peak_activations(2, 2, 0, "zigzag")


def test_a_schedule_that_deadlocks_is_refused():
    bad = [[("B", 0), ("F", 0)], [("F", 0), ("B", 0)]]
    with pytest.raises(ValueError, match="deadlock"):
        pipeline.simulate_timeline(bad)


# --------------------------------------------------------------- pipeline
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("sizes, stages, micro, batch", [((64, 32, 32, 10), 3, 4, 30), ((8, 5, 3), 2, 7, 7),
                                                         ((10, 9, 8, 7, 6), 5, 3, 11)])
def test_pipelined_gradients_equal_the_unsplit_model(schedule, sizes, stages, micro, batch):
    model = mlp(sizes, seed=1, dtype=torch.float64)
    x, y = torch.randn(batch, sizes[0], dtype=torch.float64), torch.randint(0, sizes[-1], (batch,))
    got = pipeline.pipelined_gradients(model, x, y, num_stages=stages, num_microbatches=micro, schedule=schedule)
    assert largest(got, msx.unsplit_gradients(model, x, y)) < TOL


def test_heterogeneous_pipeline_on_cpu_equals_unsplit():
    model = mlp((16, 8, 4), seed=2, dtype=torch.float64)
    x, y = torch.randn(9, 16, dtype=torch.float64), torch.randint(0, 4, (9,))
    assert largest(pipeline.run_on_devices(model, ["cpu", "cpu"], x, y, num_microbatches=3),
                   msx.unsplit_gradients(model, x, y)) < TOL


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_heterogeneous_pipeline_cpu_then_gpu_equals_unsplit():
    model = mlp((16, 8, 4), seed=2, dtype=torch.float64)
    x, y = torch.randn(9, 16, dtype=torch.float64), torch.randint(0, 4, (9,))
    assert largest(pipeline.run_on_devices(model, ["cpu", "cuda"], x, y, num_microbatches=3),
                   msx.unsplit_gradients(model, x, y)) < TOL


@pytest.mark.parametrize("world_size", [2, 3])
def test_real_pipeline_equals_the_unsplit_model(world_size):
    reports = launch(msx.pipeline_against_unsplit, world_size, dict(microbatches=4, steps=3, batch=30),
                     backend="gloo", timeout=90)
    for r in reports:
        assert len(r["gradient differences"]) == 3
        assert max(r["gradient differences"]) < TOL and max(r["parameter differences"]) < TOL


def test_split_into_stages_bad_input():
    with pytest.raises(ValueError, match="num_stages"):
        pipeline.split_into_stages(mlp((4, 3, 2)), 4)


# --------------------------------------------------------------- tensor
@pytest.mark.parametrize("n_in, hidden, n_out", [(6, 10, 5), (16, 33, 7), (3, 4, 2)])
@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_tensor_splits_equal_the_unsplit_layers(n_in, hidden, n_out, workers):
    torch.manual_seed(workers)
    first, second = torch.nn.Linear(n_in, hidden, dtype=torch.float64), torch.nn.Linear(hidden, n_out, dtype=torch.float64)
    params = list(first.parameters()) + list(second.parameters())
    x = torch.randn(9, n_in, dtype=torch.float64, requires_grad=True)
    cases = [(tp.column_parallel_linear(x, first, workers), first(x)),
             (tp.row_parallel_linear(first(x), second, workers), second(first(x))),
             (tp.megatron_mlp(x, first, second, workers), second(F.gelu(first(x))))]
    for got, want in cases:
        assert largest([got], [want]) < TOL
        g1 = torch.autograd.grad(got.square().sum(), params + [x], allow_unused=True, retain_graph=True)
        g2 = torch.autograd.grad(want.square().sum(), params + [x], allow_unused=True, retain_graph=True)
        assert largest([a for a in g1 if a is not None], [b for b in g2 if b is not None]) < TOL


def test_tensor_split_bad_input():
    with pytest.raises(ValueError, match="cannot split 3 output features among 4"):
        tp.split_columns(torch.nn.Linear(2, 3), 4)


@pytest.mark.parametrize("world_size", [2, 3])
def test_real_megatron_mlp_equals_the_unsplit_mlp(world_size):
    for r in launch(msx.megatron_mlp_worker, world_size, dict(sizes=(6, 11, 5, 7)), backend="gloo", timeout=60):
        assert max(r.values()) < TOL


# --------------------------------------------------------------- spatial
@pytest.mark.parametrize("height, width, kernel, padding, grid", [
    (11, 9, 3, 1, (2, 2)), (10, 7, 5, 0, (3, 2)), (13, 6, 4, 1, (3, 1)), (8, 8, 3, 2, (4, 3)), (5, 5, 1, 0, (5, 5)),
    (7, 12, 2, 0, (2, 5)),
])
def test_spatial_conv2d_equals_conv2d_forward_and_backward(height, width, kernel, padding, grid):
    g = torch.Generator().manual_seed(height * width)
    x = torch.randn(2, 3, height, width, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(4, 3, kernel, kernel, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, generator=g, requires_grad=True)
    tiled, full = spatial.spatial_conv2d(x, w, b, grid=grid, padding=padding), F.conv2d(x, w, b, padding=padding)
    assert largest([tiled], [full]) < TOL
    assert largest(torch.autograd.grad(tiled.square().sum(), (x, w, b)),
                   torch.autograd.grad(full.square().sum(), (x, w, b))) < TOL


@pytest.mark.parametrize("kwargs, word", [(dict(grid=(0, 1)), "grid rows"), (dict(grid=(2, 99)), "grid cols"),
                                          (dict(padding=-1), "padding")])
def test_spatial_conv2d_bad_input(kwargs, word):
    with pytest.raises(ValueError, match=word):
        spatial.spatial_conv2d(torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 3, 3), **kwargs)
    with pytest.raises(ValueError, match="channels"):
        spatial.spatial_conv2d(torch.zeros(1, 2, 6, 6), torch.zeros(1, 1, 3, 3))


def test_halo_grows_with_the_grid():
    shares = [spatial.halo_fraction(64, 64, (g, g), 3)["halo / own"] for g in (1, 2, 4, 8)]
    assert shares[0] == 0 and all(a < b for a, b in zip(shares, shares[1:]))
    assert spatial.halo_fraction(64, 64, (2, 2), 3)["halo pixels"] == 4 * 65


@pytest.mark.parametrize("world_size, shape", [(2, (2, 3, 4, 11, 9, 3)), (3, (1, 2, 2, 10, 7, 5))])
def test_real_halo_exchange_equals_conv2d(world_size, shape):
    for r in launch(spx.halo_conv_worker, world_size, dict(shape=shape), backend="gloo", timeout=60):
        assert max(v for k, v in r.items() if "gradient" in k or k == "output") < TOL
