"""Chapter 11's typical wrong answers (tests/test_exercises.py proves each check with them)."""

import torch
import torch.distributed as dist


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


def dispatch_placing_experts_round_robin(experts, kept, num_experts, world_size):
    """Takes expert e to live on rank e mod N."""
    rows = sorted((int(experts[t, j]), t) for t in range(len(experts)) for j in range(experts.shape[1]) if kept[t, j])
    return [t for _, t in rows], [sum(1 for e, _ in rows if e % world_size == r) for r in range(world_size)]


def send_assuming_it_receives_what_it_sends(x, expert, num_experts):
    """Skips the exchange of counts: receives as many rows from each rank as it sends it."""
    from nnpar_lite.collectives import all_to_all
    world = dist.get_world_size()
    send = torch.bincount(expert // (num_experts // world), minlength=world).tolist()
    return all_to_all(x[expert.sort(stable=True).indices], send, send)


def send_without_sorting(x, expert, num_experts):
    """Exchanges the counts but sends the rows in token order: rank r's block is not its tokens."""
    from nnpar_lite.collectives import all_to_all
    world = dist.get_world_size()
    send = torch.bincount(expert // (num_experts // world), minlength=world)
    receive = all_to_all(send, [1] * world, [1] * world)
    return all_to_all(x, send.tolist(), receive.tolist())


def send_to_experts_round_robin(x, expert, num_experts):
    """Sorted and counted, but expert e taken to live on rank e mod N."""
    from nnpar_lite.collectives import all_to_all
    world = dist.get_world_size()
    send = torch.bincount(expert % world, minlength=world)
    receive = all_to_all(send, [1] * world, [1] * world)
    return all_to_all(x[expert.sort(stable=True).indices], send.tolist(), receive.tolist())


def send_with_torch_directly_and_equal_receive_counts(x, expert, num_experts):
    """Calls torch.distributed directly, receiving as many rows from each rank as it sends it."""
    world = dist.get_world_size()
    send = torch.bincount(expert // (num_experts // world), minlength=world).tolist()
    output = x.new_empty(x.shape)
    dist.all_to_all_single(output, x[expert.sort(stable=True).indices], send, send)
    return output


def send_with_lists_and_equal_receive_sizes(x, expert, num_experts):
    """The list form of the all-to-all, each receive buffer as large as what this rank sends that rank."""
    world = dist.get_world_size()
    order = expert.sort(stable=True).indices
    pieces = list(torch.split(x[order], torch.bincount(expert // (num_experts // world), minlength=world).tolist()))
    arrived = [torch.empty_like(piece) for piece in pieces]
    dist.all_to_all(arrived, pieces)
    return torch.cat(arrived)


def send_in_reverse_source_order(x, expert, num_experts):
    """Right rows, but the blocks of the source ranks put last rank first."""
    from nnpar_lite.collectives import all_to_all
    world = dist.get_world_size()
    send = torch.bincount(expert // (num_experts // world), minlength=world)
    receive = all_to_all(send, [1] * world, [1] * world)
    arrived = all_to_all(x[expert.sort(stable=True).indices], send.tolist(), receive.tolist())
    return torch.cat(list(reversed(torch.split(arrived, receive.tolist()))))


WRONG_ANSWERS = {
    "11.1": [(312.5, "Round up"), (312, "Rounded down"), (157, "T · k assignments"), (250, "even share"),
             (300, "is not it")],
    "11.2": [(4_194_304, "(N − 1)/N of them are sent"), (1_572_864, "two rows"), (786_432, "counts numbers"),
             (6_291_456, "the combine too"), (12_582_912, "all four all-to-alls"), (2_500_000, "is not it")],
    "11.3": [(dispatch_by_choice_then_token, "for one expert in token order"),
             (dispatch_with_counts_per_expert, "counted the rows of each expert"),
             (dispatch_sending_dropped_rows, "capacity dropped too"),
             (dispatch_placing_experts_round_robin, "not the experts e with e mod N = r")],
    "11.4": [(send_assuming_it_receives_what_it_sends, "The receive counts are what the other ranks send"),
             (send_with_torch_directly_and_equal_receive_counts, "the check stopped an all-to-all"),
             (send_with_lists_and_equal_receive_sizes, "the check stopped an all-to-all"),
             (send_without_sorting, "sort the tokens by expert before the all-to-all"),
             (send_to_experts_round_robin, "not e mod N"),
             (send_in_reverse_source_order, "in another order")],
}
