"""Data for the chapters: the article's toy data and ways to split a batch among workers.

Nothing here downloads: every data set is written out or generated.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np


def article_data() -> tuple[np.ndarray, np.ndarray]:
    """The four samples of seed 4.1 and 4.2: X is 4×2, Y is 4×2, Y = X + 1 (float64)."""
    X = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], dtype=np.float64)
    Y = np.array([[2, 3], [4, 5], [6, 7], [8, 9]], dtype=np.float64)
    return X, Y


def even_shard_sizes(num_samples: int, num_workers: int) -> list[int]:
    """Sizes of K shards as even as possible: the first ``N mod K`` get one sample more."""
    _check_counts(num_samples, num_workers)
    base, extra = divmod(num_samples, num_workers)
    return [base + (1 if i < extra else 0) for i in range(num_workers)]


def split_by_sizes(array, sizes: Sequence[int]) -> list:
    """Cut ``array`` along its first axis into consecutive shards of the given sizes."""
    sizes = list(sizes)
    for i, size in enumerate(sizes):
        if isinstance(size, bool) or not isinstance(size, numbers.Integral):
            raise TypeError(f"shard size of worker {i} is {type(size).__name__}; expected an integer")
        if size < 1:
            raise ValueError(f"shard size of worker {i} is {size}; every worker needs at least one sample")
    if sum(sizes) != len(array):
        raise ValueError(f"shard sizes {sizes} add up to {sum(sizes)}, but there are {len(array)} samples")
    bounds = np.cumsum([0] + sizes)
    return [array[int(a):int(b)] for a, b in zip(bounds[:-1], bounds[1:])]


def _check_counts(num_samples: int, num_workers: int) -> None:
    for name, value in (("num_samples", num_samples), ("num_workers", num_workers)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if num_workers < 1:
        raise ValueError(f"num_workers is {num_workers}; need at least one worker")
    if num_samples < num_workers:
        raise ValueError(f"{num_samples} samples cannot be split among {num_workers} workers "
                         "with at least one sample each")


def skewed_shard_sizes(num_samples: int, num_workers: int, skew: float) -> list[int]:
    """K shard sizes from even (``skew`` = 0) to very uneven (``skew`` = 1).

    Worker i's share grows geometrically, so the last worker's shard is about
    ``1 + 9 * skew`` times the first's; sizes are rounded to add up to
    ``num_samples``, and each worker keeps at least one sample.
    """
    _check_counts(num_samples, num_workers)
    if not 0.0 <= skew <= 1.0:
        raise ValueError(f"skew is {skew}; expected a number between 0 and 1")
    ratio = 1.0 + 9.0 * skew
    shares = np.array([ratio ** (i / max(num_workers - 1, 1)) for i in range(num_workers)])
    spare = num_samples - num_workers  # one sample each first, the rest by share
    sizes = 1 + np.floor(spare * shares / shares.sum()).astype(int)
    for i in np.argsort(-(spare * shares / shares.sum()) % 1)[: num_samples - sizes.sum()]:
        sizes[i] += 1  # largest remainders first
    return [int(s) for s in sizes]


def standardize(X: np.ndarray) -> np.ndarray:
    """Each input column shifted to mean 0 and scaled to standard deviation 1.

    The article feeds raw inputs up to 8 into tanh, which is flat beyond about 3:
    its gradient vanishes there and training crawls or oscillates.
    """
    X = np.asarray(X, dtype=np.float64)
    std = X.std(axis=0)
    if np.any(std == 0):
        raise ValueError(f"input column(s) {np.flatnonzero(std == 0).tolist()} are constant; cannot standardize")
    return (X - X.mean(axis=0)) / std


def digits(dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """The 8×8 handwritten digits (1,797 images, 10 classes) that ship with scikit-learn.

    Returns X of shape (1797, 64), pixel intensities scaled from 0–16 to 0–1,
    and the labels y (int64). Nothing is downloaded: the file is inside the
    installed scikit-learn package.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.data / 16.0).astype(dtype), bunch.target.astype(np.int64)
