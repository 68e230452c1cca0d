"""Chapter 05: the pipeline and tensor splits equal the unsplit model (float64, 1e-10), in one
process and over real processes; the schedules are valid, their idle fraction is the bubble
formula, and the activations a stage holds, measured, are what the schedule says."""

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from nnpar_lite import costmodel, pipeline, tensor_parallel as tp
from nnpar_lite.distributed import launch
from nnpar_lite.experiments import model_split as msx
from nnpar_lite.models import mlp

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


# Per step, the micro-batch sizes: uneven, m above p, m below p, a single micro-batch.
STEPS = {2: [(9, 7, 8, 6), (3, 2), (1,)], 3: [(9, 7, 8, 6), (2, 1), (5, 5, 5, 5, 4)]}


@pytest.mark.parametrize("world_size", [2, 3])
def test_real_1f1b_and_gpipe_equal_the_unsplit_model_and_hold_what_the_schedule_says(world_size):
    reports = launch(msx.pipeline_against_unsplit, world_size, dict(micro_sizes=STEPS[world_size]),
                     backend="gloo", timeout=90)
    for stage, r in enumerate(reports):
        assert len(r["gradient differences"]) == len(STEPS[world_size])
        for step, micro_sizes in enumerate(STEPS[world_size]):
            for schedule in ("gpipe", "1f1b"):
                assert r["gradient differences"][step][schedule] < TOL
                assert r["parameter differences"][step][schedule] < TOL
            assert r["1f1b against gpipe"][step] < TOL
            m = len(micro_sizes)   # GPipe holds every micro-batch; 1F1B at most p − s of them
            assert r["peak measured"][step] == {"gpipe": m, "1f1b": min(world_size - stage, m)}
    for losses in reports[-1]["losses"]:
        assert losses["gpipe"] == pytest.approx(losses["unsplit"], abs=TOL)
        assert losses["1f1b"] == pytest.approx(losses["unsplit"], abs=TOL)


def test_real_pipeline_on_a_sub_group_of_two_out_of_three_ranks():
    reports = launch(msx.pipeline_against_unsplit, 3, dict(micro_sizes=[(4, 3, 3), (2,)], group_ranks=[1, 2]),
                     backend="gloo", timeout=90)
    assert reports[0] is None
    for stage, r in enumerate(reports[1:]):
        assert max(max(d.values()) for d in r["gradient differences"] + r["parameter differences"]) < TOL
        assert r["peak measured"] == [{"gpipe": 3, "1f1b": 2 - stage}, {"gpipe": 1, "1f1b": 1}]


def test_saved_activations_counts_the_micro_batches_autograd_keeps():
    stage = mlp((5, 4, 3), seed=0, dtype=torch.float64)
    batches = [torch.randn(2, 5, dtype=torch.float64) for _ in range(4)]
    with msx.SavedActivations(stage) as all_first:            # GPipe's order: every forward, then backwards
        outputs = [stage(x) for x in batches]
        for out in outputs:
            out.sum().backward()
    with msx.SavedActivations(stage) as alternating:          # one forward, one backward
        kept = []
        for x in batches:
            kept.append(stage(x))
            kept[-1].sum().backward()                          # the output is still referenced: its graph is freed
    with msx.SavedActivations(stage) as two_ahead:
        kept = [stage(batches[0])]
        for x in batches[1:]:
            kept.append(stage(x))
            kept[-2].sum().backward()
    assert (all_first.peak, alternating.peak, two_ahead.peak) == (4, 1, 2)


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("step", [pipeline.gpipe_step, pipeline.one_f_one_b_step])
def test_a_one_stage_pipeline_is_the_unsplit_model(one_process_group, step):
    model = mlp((6, 5, 4), seed=3, dtype=torch.float64)
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randint(0, 4, (10,))
    loss = step(model, x, y, [4, 3, 2, 1], 6)
    assert loss == pytest.approx(float(F.cross_entropy(model(x), y).detach()), abs=TOL)
    assert largest([p.grad for p in model.parameters()], msx.unsplit_gradients(model, x, y)) < TOL


def test_a_stage_receives_into_a_buffer_of_its_weights_dtype_on_their_device(one_process_group, monkeypatch):
    """Where a stage's weights live (a GPU, one day) its received activations and gradients go
    too; "meta" stands in for a second device on a machine without one."""
    received = []
    monkeypatch.setattr(dist, "recv", lambda buffer, src, group=None: received.append((buffer, src)))
    weight = torch.empty(5, dtype=torch.float16, device="meta")
    got = pipeline._Link().receive((3, 4), weight, "F0: activation")
    assert received[0][0] is got and received[0][1] == -1          # from stage rank − 1
    assert (got.device.type, got.dtype, tuple(got.shape), got.requires_grad) == ("meta", torch.float16, (3, 4), True)
    gradient = pipeline._Link().receive((2,), torch.empty(2, device="meta"), "B0: gradient", 1)
    assert gradient.device.type == "meta" and not gradient.requires_grad and received[1][1] == 1


@pytest.mark.parametrize("micro_sizes, width, kwargs, message", [
    ([4, 3, 2], 6, {}, "x must have sum\\(micro_sizes\\) = 9 rows, got 10 rows"),
    ([], 6, {}, "micro_sizes is empty"),
    ([5, 0, 5], 6, {}, "micro_sizes\\[1\\]"),
    ([5, 5], 0, {}, "activation_width"),
    ([5, 5], 6, {"schedule": "zigzag"}, "schedule must be one of"),
])
def test_pipeline_step_bad_input_changes_nothing(one_process_group, micro_sizes, width, kwargs, message):
    model = mlp((6, 5, 4), seed=3, dtype=torch.float64)
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randint(0, 4, (10,))
    with pytest.raises(ValueError, match=f"stage 0: {message}"):
        pipeline.pipeline_step(model, x, y, micro_sizes, width, **kwargs)
    assert all(p.grad is None for p in model.parameters())


def test_the_chapter_check_passes_and_fails_when_a_split_is_wrong(monkeypatch):
    rows = msx.verify_splits_against_unsplit()
    assert len(rows) == 2 * len(msx.PIPELINE_CASES) + 3 * len(msx.TENSOR_CASES) and all(ok for _, ok in rows)
    real = tp.split_rows
    monkeypatch.setattr(tp, "split_rows", lambda layer, k: [w * 1.001 for w in real(layer, k)])
    failing = [name for name, ok in msx.verify_splits_against_unsplit() if not ok]
    assert failing and all(name.startswith("tensor") and ("row" in name or "megatron" in name) for name in failing)


def test_averaging_the_parts_of_one_model_breaks_it():
    result = msx.averaging_the_parts(steps=60)
    assert result["accuracy before"] > 0.8
    assert result["accuracy after"] < result["accuracy before"] - 0.3
    assert result["largest parameter change"] > 0.05


def test_split_into_stages_bad_input():
    with pytest.raises(ValueError, match="num_stages"):
        pipeline.split_into_stages(mlp((4, 3, 2)), 4)


# --------------------------------------------------------------- tensor
@pytest.mark.parametrize("n_in, hidden, n_out", [(6, 10, 5), (16, 33, 7), (3, 4, 2)])
@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_tensor_splits_equal_the_unsplit_layers(n_in, hidden, n_out, workers):
    torch.manual_seed(workers)
    first = torch.nn.Linear(n_in, hidden, dtype=torch.float64)
    second = torch.nn.Linear(hidden, n_out, dtype=torch.float64)
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
    with pytest.raises(ValueError, match="cannot split 3 output features among more"):
        tp.split_columns(torch.nn.Linear(2, 3), 4)


@pytest.mark.parametrize("world_size", [2, 3])
def test_real_megatron_mlp_equals_the_unsplit_mlp(world_size):
    for r in launch(msx.megatron_mlp_worker, world_size, dict(sizes=(6, 11, 5, 7)), backend="gloo", timeout=60):
        assert max(r.values()) < TOL
