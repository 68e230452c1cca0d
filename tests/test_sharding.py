"""Chapter 08: ZeRO-1 and ZeRO-2 equal AdamW in one process and PyTorch's ZeroRedundancyOptimizer;
FSDP equals one process on the whole batch (float32, float16, bfloat16) and PyTorch's FSDP2; each
rank holds what the memory calculator predicts and sends what the ZeRO paper counts. On 2, 3 and
4 ranks, with a frozen layer, a tied weight and sizes that do not divide by the world size. And
the edge cases of tests/edge_workers.py on 2 and 3 ranks: parameters some ranks or no rank use,
a scheduler resumed from a saved state, FSDP with a weight the parent's forward reads, with the
root selected, and with compute_dtype beside a float32 LayerNorm.

One launch of 4 processes runs every check, on process groups of the first 2, 3 and 4 of them
(tests/sharding_workers.py)."""

import pytest
import torch

import sharding_workers
from nnpar_lite import costmodel, sharding
from nnpar_lite.distributed import launch
from nnpar_lite.experiments import sharding as runs

WORLD_SIZES = (2, 3, 4)


@pytest.fixture(scope="module")
def results():
    """{N: [rank 0's report, rank 1's, …, rank N−1's]}: one launch for the whole file."""
    per_rank = launch(sharding_workers.everything, 4, None, timeout=300)
    assert all(per_rank[rank][n] is None for n in WORLD_SIZES for rank in range(n, 4))
    return {n: [reports[n] for reports in per_rank[:n]] for n in WORLD_SIZES}


def every_rank(results):
    return [(n, rank, report) for n in WORLD_SIZES for rank, report in enumerate(results[n])]


# ------------------------------------------------------------------ ZeRO-1 and ZeRO-2
def test_zero1_equals_adamw_in_one_process_and_torchs_zero(results):
    for n, rank, report in every_rank(results):
        for name in ("zero", "zero on rings"):
            zero = report[name]
            assert len(zero["ZeRO-1 vs AdamW"]) >= 2, name
            assert max(zero["ZeRO-1 vs AdamW"]) < 1e-6, (n, rank, name, zero)
            assert max(zero["torch's ZeRO vs AdamW"]) < 1e-6, (n, rank, name, zero)


def test_zero2_equals_zero1(results):
    for n, rank, report in every_rank(results):
        assert max(report["zero"]["ZeRO-2 vs ZeRO-1"]) < 1e-6 and max(report["zero on rings"]["ZeRO-2 vs ZeRO-1"]) < 1e-6


def test_each_rank_keeps_optimizer_state_for_its_shard_only(results):
    """AdamW keeps two numbers per trainable element; over the ranks they add up to exactly
    two per element (the frozen layer has none, the tied weight counts once)."""
    model = runs.TiedFrozenNet()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for n in WORLD_SIZES:
        per_rank = [report["zero"]["optimizer state elements"] for report in results[n]]
        assert sum(per_rank) == 2 * trainable, (n, per_rank)
        assert max(per_rank) <= 2 * sum(sharding.chunk_size(p.numel(), n) for p in model.parameters()
                                         if p.requires_grad)


# ------------------------------------------------------------------ FSDP
def test_fsdp_equals_one_process_and_fsdp2_after_every_step(results):
    for n, rank, report in every_rank(results):
        for name in ("fsdp", "fsdp layernorm"):
            fsdp = report[name]
            assert len(fsdp["FSDP vs AdamW"]) >= 3
            assert max(fsdp["FSDP vs AdamW"]) < 1e-6, (n, rank, name, fsdp)
            assert max(fsdp["FSDP2 vs AdamW"]) < 1e-6 and max(fsdp["FSDP vs FSDP2"]) < 1e-6, (n, rank, name)


def test_fsdp_in_half_precision_keeps_float32_master_weights(results):
    for n, rank, report in every_rank(results):
        assert max(report["fsdp"]["FSDP float16 vs one process float16"]) < 1e-4, (n, rank)
        assert max(report["fsdp bfloat16"]["FSDP bfloat16 vs one process bfloat16"]) < 1e-3, (n, rank)
        assert report["fsdp"]["master dtypes"] == {"torch.float32"}


def test_between_steps_each_rank_holds_its_padded_share_of_the_weights(results):
    for n, rank, report in every_rank(results):
        fsdp = report["fsdp"]
        assert set(fsdp["held weight bytes"]) == {fsdp["1/N of the weights, padded"]}
        assert set(fsdp["gathered bytes"]) == {0}
    sharded = sum(p.numel() for p in runs.TiedFrozenNet().parameters()) * 4
    for n in WORLD_SIZES:
        share = results[n][0]["fsdp"]["1/N of the weights, padded"]
        units = 5          # the frozen layer, four trainable ones (the second tied layer: its bias alone)
        assert sharded / n <= share <= sharded / n + 4 * units * (n - 1) / n


def test_fsdp_frees_each_layer_and_survives_no_grad_two_backwards_and_a_layer_used_twice(results):
    for rank, report in enumerate(results[4]):
        n = 4
        behaviour = report["behaviour"]
        assert behaviour["no_grad outputs"] < 1e-6 and behaviour["gathered after no_grad"] == 0
        assert behaviour["retain_graph doubles"] < 1e-6
        assert behaviour["called twice"] < 1e-6, (n, rank, behaviour)
        assert behaviour["freed while the next layer runs"] == [True, True], (n, rank, behaviour)
        assert behaviour["after a failed forward"] == 0
        said = behaviour["a sharded weight read outside a forward"]
        assert "'first.weight' is sharded over 4 ranks" in said and "gather_full_params" in said, said


# ------------------------------------------------------------------ collectives
def test_rings_equal_torchs_collectives_and_gloo_has_them(results):
    for n, rank, report in every_rank(results):
        gaps = report["rings"]["largest difference"]
        assert gaps["float64"] < 1e-12 and gaps["float32"] < 1e-5, gaps
        assert gaps["float16"] < 1e-2 and gaps["bfloat16"] < 1e-1, gaps
        found = report["rings"]["torch collectives"]
        assert found["reduce_scatter_tensor"] and found["all_gather_into_tensor"], found


# ------------------------------------------------------------------ memory and traffic
def test_measured_memory_equals_the_calculator(results):
    """fp32: parameters, gradients and optimizer state each equal; fp16 compute: the totals
    (the calculator books 2 + 2 + 12 bytes per parameter, ours holds 4 + 4 + 8)."""
    for n, rank, report in every_rank(results):
        rows = [row for row in report["memory"] if row["sizes"] == runs.MEMORY_SIZES]
        assert len(rows) == 5, (n, rank)
        for row in rows:
            held, predicted = row["held"], row["predicted"]
            assert held["other"] == (0 if n == 4 else None), row     # the census of every tensor, on 4 ranks
            parts = ("total",) if row["compute dtype"] else ("parameters", "gradients", "optimizer state", "total")
            for part in parts:
                assert held[part] == predicted[part], (n, rank, row["stage"], part, held, predicted)


def test_with_uneven_sizes_the_ranks_share_the_state_exactly(results):
    """Sizes 10 → 7 → 3 (tensors of 70, 7, 21 and 3 elements, layers of 77 and 24): over the N
    ranks the optimizer state adds up to N times the calculator's per-rank figure, plus, for
    FSDP, the state of the padding (its shards are padded; ZeRO-1 and 2 clip theirs)."""
    psi = 101
    for n in WORLD_SIZES:
        rows = [[row for row in report["memory"] if row["sizes"] == (10, 7, 3)] for report in results[n]]
        for stage_rows in zip(*rows):
            stage = stage_rows[0]["stage"]
            total = sum(row["held"]["optimizer state"] for row in stage_rows)
            padding = 8 * (n * sum(sharding.chunk_size(k, n) for k in (77, 24)) - psi) if stage == 3 else 0
            assert total == n * stage_rows[0]["predicted"]["optimizer state"] + padding, (n, stage, total)


def test_bytes_sent_per_step_match_the_zero_paper(results):
    """Stage 0 (a ring all-reduce), 1 and 2 send 2 (N − 1)/N · Ψ elements per rank, stage 3 sends 3."""
    psi = sum((a + 1) * b for a, b in zip(runs.MEMORY_SIZES[:-1], runs.MEMORY_SIZES[1:]))
    for n, rank, report in every_rank(results):
        rows = [row for row in report["memory"] if row["sizes"] == runs.MEMORY_SIZES]
        assert sorted(row["stage"] for row in rows) == [0, 1, 2, 3, 3], (n, rank)     # stage 3 in fp32 and fp16
        for row in rows:
            assert row["elements sent"] == (3 if row["stage"] == 3 else 2) * (n - 1) * psi // n, row


# ------------------------------------------------------------------ the edge cases (tests/edge_workers.py)
EDGE = [("unused_parameters", dict(scheme=scheme, users=users, optimizer=optimizer, N=n))
        for n in (2, 3) for scheme in ("ZeRO-1", "ZeRO-2") for users in ([0], [1, 2], []) for optimizer in ("sgd", "adamw")]
EDGE += [("scheduler_resume", dict(zero2=zero2, N=n)) for n in (2, 3) for zero2 in (False, True)]
EDGE += [(name, dict(N=n)) for n in (2, 3) for name in ("fsdp_tied_to_parent", "fsdp_root_unit")]
EDGE += [("fsdp_mixed_precision_with_whole_norms", dict(dtype=dtype, N=n)) for n in (2, 3)
         for dtype in ("float16", "bfloat16")]


@pytest.fixture(scope="module")
def edge():
    """{worker name: [(config, [report of each rank in the run])]}: one launch of 3 ranks."""
    import edge_workers
    per_rank = launch(edge_workers.run_many, 3, EDGE, timeout=300)
    found: dict[str, list] = {}
    for i, (name, config) in enumerate(EDGE):
        found.setdefault(name, []).append((config, [reports[i] for reports in per_rank[:config["N"]]]))
    return found


def test_zero_gives_ddps_result_for_parameters_some_ranks_use_and_skips_those_none_uses(edge):
    """ZeRO-1 and ZeRO-2 against DDP (find_unused_parameters=True) and one process, SGD and AdamW:
    ``extra`` runs on some ranks only (ZeRO-2's reduce-scatters wait in backward's order, the
    ones it holds back leave at the end of backward), ``never`` on none: AdamW must skip it, as
    torch's optimizers skip a parameter without a gradient (no weight decay, no moment update)."""
    for config, ranks in edge["unused_parameters"]:
        for rank, report in enumerate(ranks):
            assert len(report["vs DDP"]) == 4
            assert max(report["vs DDP"]) < 1e-6 and max(report["vs one process"]) < 1e-6, (config, rank, report)
            assert report["never moved"] == 0.0, (config, rank)


def test_a_run_resumed_with_a_scheduler_equals_the_uninterrupted_one(edge):
    """StepLR halves the learning rate every step; the state is saved after 3 of 6 steps and
    loaded into a fresh model, optimizer and scheduler: param_groups holds the saved learning rate
    (0.05 / 2³) as the inner optimizer does, and the run goes on exactly as without the break."""
    for config, ranks in edge["scheduler_resume"]:
        for rank, report in enumerate(ranks):
            assert report["lr after loading: ours, inner, scheduler's"] == [0.05 / 8] * 3, (config, rank, report)
            assert report["resumed vs uninterrupted"] == 0.0, (config, rank, report)
            assert report["uninterrupted vs one process"] < 1e-6 and report["resumed vs one process"] < 1e-6


def test_fsdp_gathers_a_weight_the_parents_forward_reads(edge):
    """GPT-2's ``h @ self.wte.weight.T`` with ``wte`` a unit of its own: equal to one process."""
    for config, ranks in edge["fsdp_tied_to_parent"]:
        for rank, report in enumerate(ranks):
            assert "error" not in report, report
            assert report["units"] == ["wte", "block"] and len(report["vs one process"]) == 4
            assert max(report["vs one process"]) < 1e-6, (config, rank, report)


def test_fsdp_with_the_root_selected_shards_the_whole_model_as_one_unit(edge):
    """As FSDP2's fully_shard(root): one unit, each rank holding its padded 1/N of the weights,
    equal to one process and to fully_shard(root) after every step."""
    for config, ranks in edge["fsdp_root_unit"]:
        n = config["N"]
        for rank, report in enumerate(ranks):
            assert report["units"] == ["root"], report
            whole = report["whole model bytes"]
            assert whole / n <= report["held bytes"] < whole / n + 4, (n, report)
            assert max(report["vs one process"]) < 1e-6 and max(report["vs FSDP2"]) < 1e-6, (config, rank, report)


def test_fsdp_compute_dtype_casts_the_sharded_modules_and_keeps_the_whole_norm_in_float32(edge):
    """Only the Linear layers are sharded: they compute in the compute dtype, the LayerNorm (and
    the Tanh after it) in float32, with float32 parameters and gradients. The outputs equal the
    written-out recipe exactly and differ from the whole model cast to the compute dtype (so the
    comparison can tell them apart); trained, it stays within the dtype's rounding of one process."""
    for config, ranks in edge["fsdp_mixed_precision_with_whole_norms"]:
        dtype, tolerance = f"torch.{config['dtype']}", {"float16": 1e-3, "bfloat16": 1e-2}[config["dtype"]]
        for rank, report in enumerate(ranks):
            assert report["computed in (input, weight)"] == {"0": (dtype, dtype), "1": ("torch.float32",) * 2,
                                                             "2": ("torch.float32",) * 2, "3": (dtype, dtype)}
            assert report["norm dtypes"] == {"torch.float32"}
            assert report["outputs vs"]["written out"] == 0.0 < report["outputs vs"]["all in the compute dtype"]
            assert max(report["vs one process"]) < tolerance, (config, rank, report)


# ------------------------------------------------------------------ bad input
def test_bad_input_on_ranks_is_named(results):
    n = 4
    for rank, report in enumerate(results[n]):
        bad = report["bad input"]
        assert bad["state of another world"].startswith("ValueError") and f"of {n + 1}" in bad["state of another world"]
        assert bad["mixed dtypes"].startswith("ValueError") and "'bias'" in bad["mixed dtypes"]
        assert rank == 0 or bad["not in the group"].startswith("ValueError")


@pytest.mark.parametrize("optimizer_cls, words", [
    (torch.optim.AdamW(torch.nn.Linear(2, 2).parameters()), "not an instance"),
    (dict, "optimizer class"),
    (torch.optim.LBFGS, "not element-wise"),
])
def test_a_wrong_optimizer_class_is_refused(optimizer_cls, words):
    with pytest.raises(TypeError, match=words):
        sharding.ShardedOptimizer(torch.nn.Linear(2, 2).parameters(), optimizer_cls, lr=0.1)


def test_a_parameter_on_another_device_or_without_data_is_named():
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, device="meta"))]
    with pytest.raises(ValueError, match=r"parameter 1 \(shape \(2,\)\) is on meta"):
        sharding.ShardedOptimizer(params, torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="parameter '1.weight' .* is on meta, parameter '0.weight' on cpu"):
        sharding.FullyShardedDataParallel(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2, device="meta")))


def test_fsdp_arguments_are_checked_before_anything_changes():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        sharding.FullyShardedDataParallel([model])
    with pytest.raises(ValueError, match="compute_dtype"):
        sharding.FullyShardedDataParallel(model, compute_dtype=torch.float64)
    with pytest.raises(TypeError, match="shard_module"):
        sharding.FullyShardedDataParallel(model, shard_module=True)
    with pytest.raises(ValueError, match="no parameters"):
        sharding.FullyShardedDataParallel(torch.nn.ReLU())
    with pytest.raises(TypeError, match="FullyShardedDataParallel"):
        sharding.gather_full_params(model)
    assert isinstance(model.weight, torch.nn.Parameter)          # untouched


def test_without_a_process_group_the_message_says_how_to_get_one():
    with pytest.raises(RuntimeError, match="needs a process group"):
        sharding.ShardedOptimizer(torch.nn.Linear(2, 2).parameters(), torch.optim.SGD, lr=0.1)


def test_chunks_and_padding():
    assert [sharding.chunk_size(n, 3) for n in (0, 1, 3, 4, 10)] == [0, 1, 1, 2, 4]
    assert torch.equal(sharding.padded(torch.arange(1.0, 5.0), 3), torch.tensor([1.0, 2, 3, 4, 0, 0]))
    assert sharding.padded(torch.ones(6), 3).numel() == 6


def test_the_calculator_is_the_one_the_chapter_uses():
    """The prediction the memory runs print comes from costmodel.training_memory."""
    assert costmodel.training_memory(12, zero_stage=3, data_parallel=4)["total"] == 16 * 12 / 4
