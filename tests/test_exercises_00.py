"""Chapter 00's exercise checks, proven: the solution passes, typical wrong answers fail."""

import numpy as np
import pytest
import torch

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


def calls_the_package(shard_means, shard_sizes):
    """The package's function asked for its answer: the exercise asks for the formula."""
    import nnpar_lite as nl
    return float(nl.average_losses(shard_means, weights=shard_sizes))


WRONG_ANSWERS = {
    "00.1": [(0.5, "plain mean"), (16.8, "total loss"), (8.4, "not of workers"), (0.65, "other's sample count"),
             ("0.35 or so", "not a number"), (0.3, "is not it"), (0.4, "close: give more digits")],
    "00.2": [(5, "is not it"), (1 / 6, "upside down"), (11, "ratio of the two shard sizes"),
             (0.5454545454545454, "worker 1's factor")],
    "00.3": [(plain_mean_of_means, "case uneven sizes 10 and 30: expected 0.45, got 0.6. That is the plain mean"),
             (divides_by_the_number_of_workers, "case two equal shards: expected 0.4, got 4. The sum is right"),
             (forgets_to_divide, "total loss over all samples"),
             (returns_nothing, "got None"), (calls_the_package, "uses average_losses")],
}



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
        """Right, but reads a second shard that K = 1 does not have."""
        return (shard_sizes[0] * shard_means[0] + sum(n * m for n, m in zip(shard_sizes[1:], shard_means[1:]))
                + 0 * shard_means[1]) / sum(shard_sizes)

    assert not check("00.3", crashes)
    assert "case K = 1: your function raised IndexError" in capsys.readouterr().out
