"""Chapter 11's exercise checks, proven: the solution passes, typical wrong answers fail."""

import pytest

from exercise_proofs import assert_check_is_proven


def dispatch_by_choice_then_token(experts, kept, num_experts, world_size):
    """Loops over the choices before the tokens: within one expert, second choices come
    after every first choice instead of in token order."""
    rows = [(int(experts[t, j]), j, t) for t in range(len(experts)) for j in range(experts.shape[1]) if kept[t, j]]
    rows.sort()
    per_rank = num_experts // world_size
    return [t for _, _, t in rows], [sum(1 for e, _, _ in rows if e // per_rank == r) for r in range(world_size)]


def dispatch_with_counts_per_expert(experts, kept, num_experts, world_size):
    """Sorts right but counts the rows of each expert, not of each rank."""
    rows = sorted((int(experts[t, j]), t) for t in range(len(experts)) for j in range(experts.shape[1]) if kept[t, j])
    return [t for _, t in rows], [sum(1 for e, _ in rows if e == x) for x in range(num_experts)]


def dispatch_sending_dropped_rows(experts, kept, num_experts, world_size):
    """Forgets capacity: sends the dropped assignments too."""
    rows = sorted((int(experts[t, j]), t) for t in range(len(experts)) for j in range(experts.shape[1]))
    per_rank = num_experts // world_size
    return [t for _, t in rows], [sum(1 for e, _ in rows if e // per_rank == r) for r in range(world_size)]


def send_assuming_it_receives_what_it_sends(x, expert, num_experts):
    """Skips the exchange of counts: receives as many rows from each rank as it sends it."""
    import torch
    import torch.distributed as dist
    from nnpar_lite.collectives import all_to_all
    world = dist.get_world_size()
    send = torch.bincount(expert // (num_experts // world), minlength=world).tolist()
    return all_to_all(x[expert.sort(stable=True).indices], send, send)


def send_without_sorting(x, expert, num_experts):
    """Exchanges the counts but sends the rows in token order: rank r's block is not its tokens."""
    import torch
    import torch.distributed as dist
    from nnpar_lite.collectives import all_to_all
    world = dist.get_world_size()
    send = torch.bincount(expert // (num_experts // world), minlength=world)
    receive = all_to_all(send, [1] * world, [1] * world)
    return all_to_all(x, send.tolist(), receive.tolist())


WRONG_ANSWERS = {
    "11.1": [(312.5, "Round up"), (157, "T · k assignments"), (250, "even share")],
    "11.2": [(2_097_152, "(N − 1)/N of them are sent"), (786_432, "two rows"), (3_145_728, "the combine too")],
    "11.3": [(dispatch_by_choice_then_token, "case T = 7, k = 2, E = 4, N = 2: expected"),
             (dispatch_with_counts_per_expert, "case T = 6, k = 1, E = 2, N = 1: expected"),
             (dispatch_sending_dropped_rows, "some dropped: expected")],
    "11.4": [(send_assuming_it_receives_what_it_sends, "exchange those counts first"),   # gloo aborts the ranks
             (send_without_sorting, "rank 0 of 2: expected")],
}


@pytest.mark.parametrize("exercise_id", sorted(WRONG_ANSWERS))
def test_check_is_proven(capsys, exercise_id):
    assert_check_is_proven(capsys, exercise_id, WRONG_ANSWERS[exercise_id])


def test_the_prompts_numbers_give_the_solutions():
    from nnpar_lite import costmodel
    from nnpar_lite.exercises.experts import BYTES_PROMPT, CAPACITY_PROMPT
    assert costmodel.expert_capacity(**CAPACITY_PROMPT) == 313
    assert costmodel.expert_all_to_all_bytes(**BYTES_PROMPT) == 1_572_864
