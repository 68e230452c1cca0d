"""Chapter 02's runs: the repaired networks of seed 4.1 and 4.2 trained by K workers."""

from __future__ import annotations

import functools

from ..data import article_data, even_shard_sizes, standardize
from ..data_parallel import train_simulated
from ..model_averaging import train_local_sgd
from ..models import LinearRegression, TanhNetwork


@functools.lru_cache(maxsize=64)     # the widget and the chapter's figure ask for the same runs
def training_curves(num_workers: int = 2, lr: float = 0.03, epochs: int = 200, local_steps: int = 10) -> dict:
    """Loss curves on the article's data, as (steps per worker, losses): one worker on the
    whole batch, against K data-parallel workers (4.1, weighted and plain mean) and K
    averaged sub-models (4.2, averaged every step and every ``local_steps`` steps)."""
    X, Y = article_data()
    X_std = standardize(X)  # the tanh network trains on standardized inputs (see the chapter)
    K, H = num_workers, local_steps
    workers, sub_models = ("worker", "sub-model") if K == 1 else ("workers", "sub-models")
    every_step, every_h = list(range(epochs + 1)), list(range(0, (epochs // H) * H + 1, H))
    curves = {
        "4.1 one worker, whole batch": (every_step, LinearRegression(seed=0).fit(X, Y, epochs=epochs, lr=lr)),
        f"4.1 {K} {workers}, gradients weighted by shard": (every_step, train_simulated(
            LinearRegression(seed=0), X, Y, num_workers=K, epochs=epochs, lr=lr)),
        f"4.1 {K} {workers}, plain mean of gradients": (every_step, train_simulated(
            LinearRegression(seed=0), X, Y, num_workers=K, epochs=epochs, lr=lr, weighted=False)),
        "4.2 one worker, whole batch": (every_step, TanhNetwork(seed=0).fit(X_std, Y, epochs=epochs, lr=lr)),
        f"4.2 {K} {sub_models}, averaged every step": (every_step, train_local_sgd(
            TanhNetwork(seed=0), X_std, Y, num_workers=K, rounds=epochs, local_steps=1, lr=lr)),
        f"4.2 {K} {sub_models}, averaged every {H} steps": (every_h, train_local_sgd(
            TanhNetwork(seed=0), X_std, Y, num_workers=K, rounds=epochs // H, local_steps=H, lr=lr)),
    }
    return {"shard sizes": even_shard_sizes(len(X), K), "curves": curves}
