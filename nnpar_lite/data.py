"""Data for the chapters: the article's toy data and ways to split a batch among workers.

Nothing here downloads: every data set is written out or generated.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from .util import even_bounds, real_number, whole_number


def article_data() -> tuple[np.ndarray, np.ndarray]:
    """The four samples of seed 4.1 and 4.2: X is 4×2, Y is 4×2, Y = X + 1 (float64)."""
    X = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], dtype=np.float64)
    Y = np.array([[2, 3], [4, 5], [6, 7], [8, 9]], dtype=np.float64)
    return X, Y


def even_shard_sizes(num_samples: int, num_workers: int) -> list[int]:
    """Sizes of K shards as even as possible: the first ``N mod K`` get one sample more."""
    _check_counts(num_samples, num_workers)
    return [stop - start for start, stop in even_bounds(num_samples, num_workers)]


def split_by_sizes(array, sizes: Sequence[int]) -> list:
    """Cut ``array`` along its first axis into consecutive shards of the given sizes."""
    sizes = [whole_number(f"shard size of worker {i}", size) for i, size in enumerate(sizes)]   # ≥ 1 sample each
    if sum(sizes) != len(array):
        raise ValueError(f"shard sizes {sizes} add up to {sum(sizes)}, but there are {len(array)} samples")
    bounds = np.cumsum([0] + sizes)
    return [array[int(a):int(b)] for a, b in zip(bounds[:-1], bounds[1:])]


def split_batch(X, Y, shard_sizes: Sequence[int]) -> list[tuple]:
    """Seed 3.1 step 1: cut the batch (X, Y) into consecutive shards of the given sizes, one
    (X_k, Y_k) per worker."""
    return list(zip(split_by_sizes(X, shard_sizes), split_by_sizes(Y, shard_sizes)))


def _check_counts(num_samples: int, num_workers: int) -> None:
    whole_number("num_samples", num_samples, minimum=0)
    whole_number("num_workers", num_workers)
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
    real_number("skew", skew, minimum=0, maximum=1)
    ratio = 1.0 + 9.0 * skew
    return proportional_sizes(num_samples, [ratio ** (i / max(num_workers - 1, 1)) for i in range(num_workers)])


def proportional_sizes(num_samples: int, shares: Sequence[float]) -> list[int]:
    """Whole shard sizes in proportion to ``shares`` that add up to ``num_samples``, each at
    least one: n_i = ⌊N s_i / Σ s⌋, raised to 1 where that is 0, and the samples rounding
    leaves over go to the largest remainders (largest-remainder rounding)."""
    _check_counts(num_samples, len(shares))
    shares = np.array([real_number(f"share of worker {i}", share, above=0) for i, share in enumerate(shares)])
    exact = num_samples * shares / shares.sum()
    sizes = np.maximum(np.floor(exact).astype(int), 1)
    by_remainder = np.argsort(-(exact - np.floor(exact)), kind="stable")
    for i in by_remainder[: max(num_samples - sizes.sum(), 0)]:
        sizes[i] += 1
    while sizes.sum() > num_samples:          # raising zeros to 1 took samples: who has most over gives back
        sizes[np.argmax(np.where(sizes > 1, sizes - exact, -np.inf))] -= 1
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


def per_sample_losses(num_samples: int) -> np.ndarray:
    """Per-sample losses of an unshuffled batch that grow along it (the later samples are
    harder), which is what makes unequal shards' means disagree: ℓ_n = 0.2 + 1.8 (n / (N − 1))²."""
    return 0.2 + 1.8 * np.linspace(0.0, 1.0, num_samples) ** 2


def digits(dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """The 8×8 handwritten digits (1,797 images, 10 classes) that ship with scikit-learn.

    Returns X of shape (1797, 64), pixel intensities scaled from 0–16 to 0–1,
    and the labels y (int64). Nothing is downloaded: the file is inside the
    installed scikit-learn package.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.data / 16.0).astype(dtype), bunch.target.astype(np.int64)


TRAIN_SIZE = 1500   # the digits' one train/test cut: the first 1,500 images train, the other 297 test


@functools.lru_cache(maxsize=1)
def _digits_tensors():
    import torch

    return tuple(torch.from_numpy(a) for a in digits())


def digits_split():
    """The digits as tensors, cut once for every chapter: (x_train, y_train, x_test, y_test),
    1,500 training and 297 test images (float32 pixels in 0–1, int64 labels)."""
    X, y = _digits_tensors()
    return X[:TRAIN_SIZE], y[:TRAIN_SIZE], X[TRAIN_SIZE:], y[TRAIN_SIZE:]


def demo_batch(num_samples: int = 120):
    """The first ``num_samples`` digits as float64 tensors: a small batch to compare gradients on."""
    X, y = _digits_tensors()
    return X[:num_samples].double(), y[:num_samples]


def dirichlet_split(labels: np.ndarray, num_workers: int, alpha: float, *, seed: int = 0,
                    min_size: int = 1, max_tries: int = 100) -> list[np.ndarray]:
    """Split sample indices among K workers with label skew (non-IID): each class is cut among the
    workers in Dirichlet(α) shares, the split of Yurochkin et al. 2019 and Wang et al. 2020 (FedMA);
    Hsu et al. 2019 draw each client's class mix instead.

    For each class, the shares of its samples going to the K workers are drawn
    from a symmetric Dirichlet distribution with concentration ``alpha``: large
    α (say 100) gives every worker nearly the same mix of labels (IID); small α
    (0.1) gives each worker mostly one or two labels. Draws are repeated until
    every worker holds at least ``min_size`` samples.
    """
    labels = np.asarray(labels)
    _check_counts(len(labels), num_workers)
    real_number("alpha (the Dirichlet concentration)", alpha, above=0)
    if len(labels) < num_workers * min_size:
        raise ValueError(f"{len(labels)} samples cannot give {num_workers} workers {min_size} each")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        shards: list[list[int]] = [[] for _ in range(num_workers)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(num_workers, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * len(members)).round().astype(int)
            for worker, part in enumerate(np.split(members, cuts)):
                shards[worker] += part.tolist()
        if min(len(s) for s in shards) >= min_size:
            return [np.sort(np.array(s, dtype=np.int64)) for s in shards]
    raise ValueError(f"no split with at least {min_size} samples per worker in {max_tries} draws "
                     f"(alpha={alpha}, {num_workers} workers); raise alpha or lower min_size")


def iid_split(num_samples: int, num_workers: int, *, seed: int = 0) -> list[np.ndarray]:
    """Shuffle the sample indices and deal them into K nearly equal shards (IID)."""
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in split_by_sizes(order, even_shard_sizes(num_samples, num_workers))]


def sample_image(scale: int = 4):
    """A real photograph that ships with scikit-learn, grey, shrunk by ``scale``: (1, 1, H, W)."""
    import torch
    from sklearn.datasets import load_sample_image

    image = load_sample_image("china.jpg").mean(axis=2)[::scale, ::scale] / 255.0
    return torch.tensor(image, dtype=torch.float64)[None, None]


def edge_kernel(size: int):
    """A size×size edge detector (a Laplacian of a box): a kernel whose result is easy to see."""
    import torch

    kernel = -torch.ones(size, size, dtype=torch.float64)
    kernel[size // 2, size // 2] = size * size - 1
    return kernel[None, None] / (size * size)


# ------------------------------------------------------------------ the GPT corpus
def gpt_corpus() -> str:
    """A few KB of the workbook's own prose, in English and Chinese, shipped with the package
    (``corpus.txt``): what the tiny GPT of chapters 10–12 learns to continue, character by character."""
    from pathlib import Path
    return (Path(__file__).with_name("corpus.txt")).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def char_vocabulary() -> tuple[str, ...]:
    """The corpus's distinct characters, sorted: character i is token i."""
    return tuple(sorted(set(gpt_corpus())))


def encode(text: str):
    """Token ids of ``text`` (a LongTensor); a character outside the corpus is an error naming it."""
    import torch
    index = {c: i for i, c in enumerate(char_vocabulary())}
    missing = sorted(set(text) - set(index))
    if missing:
        raise ValueError(f"characters {missing[:5]} are not in the corpus's vocabulary")
    return torch.tensor([index[c] for c in text], dtype=torch.long)


def decode(ids) -> str:
    """The text of token ids."""
    vocabulary = char_vocabulary()
    return "".join(vocabulary[int(i)] for i in ids)


def corpus_batches(batch_size: int, block_size: int, steps: int, *, seed: int = 0) -> list:
    """``steps`` batches (x, y) of ``batch_size`` windows of the corpus, each ``block_size`` long,
    y = x shifted by one character: the same list for the same arguments, on every machine
    and every rank (a seeded generator picks the windows' starts)."""
    import torch
    for name, value in (("batch_size", batch_size), ("block_size", block_size), ("steps", steps)):
        whole_number(name, value, minimum=0 if name == "steps" else 1)
    ids = encode(gpt_corpus())
    if block_size + 1 > len(ids):
        raise ValueError(f"block_size = {block_size} is longer than the corpus ({len(ids)} characters)")
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - block_size, (batch_size,), generator=generator)
        window = torch.stack([ids[s:s + block_size + 1] for s in starts.tolist()])
        batches.append((window[:, :-1], window[:, 1:]))
    return batches
