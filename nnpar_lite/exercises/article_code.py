"""Chapter 02's exercises: the article's code (seed 4.1, 4.2)."""

from __future__ import annotations

import numpy as np

from ..models import TanhNetwork, mse_output_gradient


def planted_fault_network(seed: int = 3) -> TanhNetwork:
    """A 4.2 network whose backward pass hides one fault. Which parameter's gradient is wrong?"""

    class Planted(TanhNetwork):
        def gradients(self, X, Y):
            p = self.params
            X1 = X @ p["W1"] + p["b1"]
            H = np.tanh(X1)
            dY = mse_output_gradient(H @ p["W2"] + p["b2"], Y)
            dX1 = (dY @ p["W2"].T) * (1.0 - H ** 2)
            return {"W1": X.T @ dX1, "b1": dX1.sum(axis=0), "W2": X1.T @ dY, "b2": dY.sum(axis=0)}

    return Planted(seed=seed)
