"""Chapter 07's exercise checks, proven: the solution passes, typical wrong answers fail with
the hint that names their mistake."""

import numpy as np
import pytest

from nnpar_lite.exercises import all_exercises, scaling


def fit_by_plain_least_squares(nbytes, seconds, world_size):
    """Right model, but the absolute error: the large messages' noise swamps α."""
    n, t, p = np.asarray(nbytes), np.asarray(seconds), world_size
    design = np.stack([np.full_like(n, 2 * (p - 1)), 2 * (p - 1) / p * n], axis=1)
    return tuple(np.linalg.lstsq(design, t, rcond=None)[0])


def fit_without_the_ring_factors(nbytes, seconds, world_size):
    """t = α + n β, weighted right: forgets the 2(p − 1) steps."""
    n, t = np.asarray(nbytes), np.asarray(seconds)
    design = np.stack([np.ones_like(n), n], axis=1) / t[:, None]
    return tuple(np.linalg.lstsq(design, np.ones_like(t), rcond=None)[0])


def fit_from_two_points(nbytes, seconds, world_size):
    """Through the smallest and the largest message only: one noisy point decides each constant."""
    p = world_size
    (n0, n1), (t0, t1) = (nbytes[0], nbytes[-1]), (seconds[0], seconds[-1])
    beta = (t1 - t0) / (2 * (p - 1) / p * (n1 - n0))
    return (t0 - 2 * (p - 1) / p * n0 * beta) / (2 * (p - 1)), beta


def fit_by_the_package(nbytes, seconds, world_size):
    """The package's fit asked for the answer, behind a helper of the notebook's own."""
    return helper_that_fits(nbytes, seconds, world_size)


def helper_that_fits(nbytes, seconds, world_size):
    from nnpar_lite import costmodel
    return costmodel.fit_alpha_beta(nbytes, seconds, world_size)


WRONG_ANSWERS = {
    "07.1": [(10.3, "sends n once"), (18.75, "also pays the latency"), (300.3, "single parameter server"),
             (0.01905, "in seconds"), ("fast", "not a number"), (19, "close: give more digits"), (19.2, "More digits would not help")],
    "07.2": [(16, "still needs"), (8, "still needs"), (64, "fewer devices"), (21, "not one of the widget's values")],
    "07.3": [(1.2235e6, "crossed twice"), (366_667, "not 2n"), (1e5, "is not it")],
    "07.4": [(fit_by_plain_least_squares, "plain least squares"), (fit_without_the_ring_factors, "first difference"),
             (fit_from_two_points, "case "), (fit_by_the_package, "uses fit_alpha_beta")],
}



def test_the_fit_cases_are_unseen_noisy_and_varied():
    """The learner's fit meets noise (the exact model would let any solver pass) and p from 2 to 8."""
    from nnpar_lite import costmodel
    worlds = {case.args[2] for case in scaling.FIT_CASES}
    assert {2, 3, 8} <= worlds and len({len(case.args[0]) for case in scaling.FIT_CASES}) > 1
    for case in scaling.FIT_CASES:
        nbytes, seconds, p = case.args
        exact = [costmodel.ring_allreduce_time(n, p, 1, 1) for n in nbytes]
        assert not np.allclose(np.asarray(seconds) / exact, seconds[0] / exact[0])


def test_the_widget_answers_match_the_calculator():
    from nnpar_lite import costmodel
    d = scaling.ZERO2_DEVICES
    assert d == 32
    assert costmodel.training_memory(30e9, precision="mixed", zero_stage=2, data_parallel=d)["total"] <= 80e9
    assert costmodel.training_memory(30e9, precision="mixed", zero_stage=2, data_parallel=d // 2)["total"] > 80e9
    crossover = all_exercises()["07.3"].solution
    assert crossover == pytest.approx(22 * 10e-6 / (6.125 * 1e-10))
    assert costmodel.ring_allreduce_time(crossover, 16, 10e-6, 1e-10) == pytest.approx(
        costmodel.tree_allreduce_time(crossover, 16, 10e-6, 1e-10))
