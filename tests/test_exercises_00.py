"""Chapter 00's exercise checks, proven: the solution passes, typical wrong answers fail."""

import numpy as np
import pytest
import torch

from exercise_proofs import assert_check_is_proven
from nnpar_lite.exercises import check


def plain_mean_of_means(shard_means, shard_sizes):
    """The article's L = 1/N Σ L_i with N = K: right only for equal shards."""
    return sum(shard_means) / len(shard_means)


def divides_by_the_number_of_workers(shard_means, shard_sizes):
    """Weights by size but divides by K instead of Σ n_i."""
    return sum(n * loss for n, loss in zip(shard_sizes, shard_means)) / len(shard_means)


def forgets_to_divide(shard_means, shard_sizes):
    """The batch's total loss, not its mean."""
    return sum(n * loss for n, loss in zip(shard_sizes, shard_means))


def returns_nothing(shard_means, shard_sizes):
    total = sum(n * loss for n, loss in zip(shard_sizes, shard_means)) / sum(shard_sizes)  # noqa: F841


WRONG_ANSWERS = {
    "00.1": [(0.5, "Weight each worker's mean"), (16.8, "divide by all 48"), ("0.35 or so", "not a number")],
    "00.2": [(0.5, "compare the weight 1/2"), (9, "n₀/60"), (0.1, "Read worker 0's shard size")],
    "00.3": [(plain_mean_of_means, "case uneven sizes 10 and 30: expected 0.45"),
             (divides_by_the_number_of_workers, "case K = 1: expected 0.7, got 3.5"),
             (forgets_to_divide, "not by K"),
             (returns_nothing, "got None")],
}


@pytest.mark.parametrize("exercise_id", sorted(WRONG_ANSWERS))
def test_check_is_proven(capsys, exercise_id):
    assert_check_is_proven(capsys, exercise_id, WRONG_ANSWERS[exercise_id])


def test_the_function_check_accepts_numpy_and_torch_numbers(capsys):
    def with_numpy(shard_means, shard_sizes):
        return np.average(shard_means, weights=shard_sizes)

    def with_torch(shard_means, shard_sizes):
        n = torch.tensor(shard_sizes, dtype=torch.float64)
        return (n * torch.tensor(shard_means, dtype=torch.float64)).sum() / n.sum()

    assert check("00.3", with_numpy) and check("00.3", with_torch)
    assert "all 5 cases pass" in capsys.readouterr().out


def test_an_unsolved_function_reads_not_solved(capsys):
    def weighted_shard_mean(shard_means, shard_sizes):
        raise NotImplementedError  # your code here

    assert not check("00.3", weighted_shard_mean)
    assert "not solved yet" in capsys.readouterr().out


def test_a_crashing_function_is_reported_with_its_case(capsys):
    def crashes(shard_means, shard_sizes):
        return shard_means[1]

    assert not check("00.3", crashes)
    assert "case K = 1: your function raised IndexError" in capsys.readouterr().out
