"""Chapter 05's exercise checks, proven: the solution passes, typical wrong answers fail."""

import pytest

from exercise_proofs import assert_check_is_proven


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


WRONG_ANSWERS = {
    "05.1": [(27, "smallest whole m"), (30, "smallest whole m")],
    "05.2": [(8, "warm-up forwards"), (4, "numbered from 0")],
    "05.3": [(2048 * 1024 * 4 // 4, "not a 1/t slice"), (2048 * 4096 * 4, "stays split")],
    "05.4": [(warmup_one_too_long, "case p = 1, m = 5, stage 0: expected"),
             (warmup_not_capped_by_m, "case p = 4, m = 2, stage 0: expected"),
             (gpipe_order, "expected")],
}


@pytest.mark.parametrize("exercise_id", sorted(WRONG_ANSWERS))
def test_check_is_proven(capsys, exercise_id):
    assert_check_is_proven(capsys, exercise_id, WRONG_ANSWERS[exercise_id])


def test_an_unfinished_function_reads_not_solved_yet(capsys):
    from nnpar_lite.exercises import check
    assert not check("05.4", unfinished)
    assert "not solved yet" in capsys.readouterr().out
