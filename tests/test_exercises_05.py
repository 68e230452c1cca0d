"""Chapter 05's exercise checks, proven: the solution passes, typical wrong answers fail."""

import pytest



def order_after_warmup(warmup, num_microbatches):
    """A 1F1B stage's order once its warm-up forwards are chosen: one forward, one backward."""
    order, next_forward = [("F", i) for i in range(warmup)], warmup
    for i in range(num_microbatches):
        if next_forward < num_microbatches:
            order.append(("F", next_forward))
            next_forward += 1
        order.append(("B", i))
    return order


def warmup_one_too_long(num_stages, num_microbatches, stage):
    """Warms up with p − s forwards instead of p − 1 − s: the last stage would start with a forward too many."""
    return order_after_warmup(min(num_stages - stage, num_microbatches), num_microbatches)


def warmup_not_capped_by_m(num_stages, num_microbatches, stage):
    """Forgets the min with m: with fewer micro-batches than stages it runs forwards that do not exist."""
    return order_after_warmup(num_stages - 1 - stage, num_microbatches)


def gpipe_order(num_stages, num_microbatches, stage):
    """GPipe's order: every forward first, then the backwards in reverse."""
    return [("F", i) for i in range(num_microbatches)] + [("B", i) for i in reversed(range(num_microbatches))]


def unfinished(num_stages, num_microbatches, stage):
    raise NotImplementedError  # your code here


def calls_the_schedule(num_stages, num_microbatches, stage):
    """The package's schedule asked for the answer."""
    from nnpar_lite.pipeline import one_f_one_b_schedule
    return one_f_one_b_schedule(num_stages, num_microbatches)[stage]


WRONG_ANSWERS = {
    "05.1": [(27, "exactly 10 %"), (31, "m + p − 1 slots"), (30, "is not it")],
    "05.2": [(10, "GPipe"), (3, "warm-up forwards only"), (5, "numbered from 0"), (6, "stage 0's peak")],
    "05.3": [(1_048_576, "not a 1/t slice"), (4_194_304, "stays split"), (33_554_432, "whole 4h-wide"),
             (67_108_864, "all t partial outputs")],
    "05.4": [(warmup_one_too_long, "case p = 1, m = 5, stage 0: first difference at position 1"),
             (warmup_not_capped_by_m, "case p = 4, m = 2, stage 0"),
             (gpipe_order, "GPipe's order"), (calls_the_schedule, "uses one_f_one_b_schedule")],
}



def test_an_unfinished_function_reads_not_solved_yet(capsys):
    from nnpar_lite.exercises import check
    assert not check("05.4", unfinished)
    assert "not solved yet" in capsys.readouterr().out
