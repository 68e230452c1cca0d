"""Chapter 00's computation: how K workers' shard losses combine into the batch's loss."""

from __future__ import annotations

from ..data import per_sample_losses, skewed_shard_sizes, split_by_sizes
from ..formulas import average_losses


def loss_averages(num_workers: int, skew: float, num_samples: int = 60) -> dict:
    """The batch's true mean loss, the article's plain mean of the shard means, and the mean
    of the shard means weighted by shard size, for K shards of the given skew."""
    losses = per_sample_losses(num_samples)
    sizes = skewed_shard_sizes(num_samples, num_workers, skew)
    shard_means = [float(s.mean()) for s in split_by_sizes(losses, sizes)]
    return {
        "sizes": sizes,
        "shard means": shard_means,
        "true mean": float(losses.mean()),
        "plain mean (article)": float(average_losses(shard_means)),
        "weighted by size": float(average_losses(shard_means, weights=sizes)),
    }
