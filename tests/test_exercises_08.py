"""Chapter 08's exercise checks, proven: the solution passes, typical wrong answers fail."""

import pytest
import torch.distributed as dist



def step_without_dividing(flat_params, flat_grad, momentum, lr, beta):
    """Takes the reduce-scatter's sum for the average: N times too large a step."""
    import torch
    from nnpar_lite.sharding import all_gather, reduce_scatter
    rank, chunk = dist.get_rank(), momentum.numel()
    mine = flat_params[rank * chunk:(rank + 1) * chunk]
    momentum.mul_(beta).add_(reduce_scatter(torch.empty_like(momentum), flat_grad))
    mine -= lr * momentum
    all_gather(flat_params, mine.clone())


def step_without_the_all_gather(flat_params, flat_grad, momentum, lr, beta):
    """Updates its own chunk and forgets to share it: the other chunks stay stale."""
    import torch
    from nnpar_lite.sharding import reduce_scatter
    rank, world, chunk = dist.get_rank(), dist.get_world_size(), momentum.numel()
    momentum.mul_(beta).add_(reduce_scatter(torch.empty_like(momentum), flat_grad) / world)
    flat_params[rank * chunk:(rank + 1) * chunk] -= lr * momentum


WRONG_ANSWERS = {
    "08.1": [(13.5, "ZeRO-1"), (48, "unsharded copy"), (2, "ZeRO-3"), (8, "close: give more digits")],
    "08.2": [(1333.33, "whole elements"), (1332, "round up"), (4000, "whole layer"), (1340, "is not it")],
    "08.3": [(1_800_000, "gathers the weights once more"), (3_600_000, "(N − 1)/N of the elements"),
             (675_000, "not (N − 1)/N of a shard")],
    "08.4": [(step_without_dividing, "3 times too large"), (step_without_the_all_gather, "never changed")],
}



def test_the_step_traffic_08_3_asks_for_is_what_the_package_sends():
    """costmodel.zero_communication, 08.3's answer, against the elements each rank of the package's
    ZeRO stages actually sends on 4 ranks (every layer a multiple of 4, as the prompt says)."""
    from nnpar_lite import costmodel
    from nnpar_lite.distributed import launch
    from nnpar_lite.experiments.sharding import memory_and_traffic

    sizes = (8, 12, 4)                                  # 108 and 52 parameters: multiples of 4
    runs = [{"stage": stage, "sizes": sizes, "census": False} for stage in (0, 1, 2, 3)]
    per_rank = launch(memory_and_traffic, 4, runs, timeout=120)
    psi = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    for stage in range(4):
        sent = {report[stage]["elements sent"] for report in per_rank}
        assert sent == {costmodel.zero_communication(psi, 4, stage)}, (stage, sent)
