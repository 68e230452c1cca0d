"""The article's two networks (seed 4.1 and 4.2), repaired, in numpy, with torch twins.

Both use the mean-squared error over all N·m entries of the N×m output,

    L = 1/(N m) Σ_{n,j} (Ŷ_nj − Y_nj)²,   so   ∂L/∂Ŷ = 2 (Ŷ − Y) / (N m),

a learning rate η, and shapes that match the data (2 inputs → 2 outputs). A
model keeps its parameters in ``self.params`` (a dict of arrays: a tree the
formulas of :mod:`nnpar_lite.formulas` accept) and offers ``loss``,
``gradients`` and ``to_torch`` (the same network as torch modules, whose
autograd is the independent reference for the hand-written backward pass).
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch

from .formulas import sgd_step


def mse_output_gradient(Y_hat: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """∂L/∂Ŷ for L = mean((Ŷ − Y)²): 2 (Ŷ − Y) / Y.size.

    The article writes ``2 * (Y - Y_hat)``: the opposite sign (so subtracting
    it climbs the loss) and N·m times too large.
    """
    return 2.0 * (Y_hat - Y) / Y.size


class Model:
    """What both networks share: the loss, one SGD step, training, copying."""

    params: dict[str, np.ndarray]

    def forward(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def gradients(self, X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def loss(self, X: np.ndarray, Y: np.ndarray) -> float:
        """L = mean((Ŷ − Y)²)."""
        return float(np.mean((self.forward(X) - Y) ** 2))

    def step(self, X: np.ndarray, Y: np.ndarray, lr: float) -> None:
        """θ ← θ − η ∇L on the batch (X, Y)."""
        self.params = sgd_step(self.params, self.gradients(X, Y), lr)

    def fit(self, X: np.ndarray, Y: np.ndarray, *, epochs: int, lr: float) -> list[float]:
        """Full-batch gradient descent; the loss before each epoch and after the last. A diverging
        run stops with the ValueError of a gradient that holds NaN or Inf; numpy's overflow warnings
        on the way there (a thousand of them) are silenced."""
        with np.errstate(over="ignore", invalid="ignore"):
            losses = [self.loss(X, Y)]
            for _ in range(epochs):
                self.step(X, Y, lr)
                losses.append(self.loss(X, Y))
        return losses

    def copy(self) -> "Model":
        return copy.deepcopy(self)


class LinearRegression(Model):
    """Seed 4.1 repaired: Ŷ = X W + b, with W of shape (inputs, outputs)."""

    def __init__(self, n_in: int = 2, n_out: int = 2, *, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.params = {"W": rng.standard_normal((n_in, n_out)), "b": rng.standard_normal(n_out)}

    def forward(self, X: np.ndarray) -> np.ndarray:
        return X @ self.params["W"] + self.params["b"]

    def gradients(self, X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
        dY = mse_output_gradient(self.forward(X), Y)
        return {"W": X.T @ dY,
                "b": dY.sum(axis=0)}  # over the samples only: one gradient per output

    def to_torch(self) -> torch.nn.Module:
        layer = torch.nn.Linear(*self.params["W"].shape, dtype=torch.float64)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(self.params["W"].T))  # torch stores W transposed
            layer.bias.copy_(torch.from_numpy(self.params["b"]))
        return layer


class TanhNetwork(Model):
    """Seed 4.2 repaired: X1 = X W1 + b1, H = tanh(X1), Ŷ = H W2 + b2."""

    def __init__(self, n_in: int = 2, n_hidden: int = 4, n_out: int = 2, *, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.params = {
            "W1": rng.standard_normal((n_in, n_hidden)) / np.sqrt(n_in), "b1": np.zeros(n_hidden),
            "W2": rng.standard_normal((n_hidden, n_out)) / np.sqrt(n_hidden), "b2": np.zeros(n_out),
        }

    def forward(self, X: np.ndarray) -> np.ndarray:
        p = self.params
        return np.tanh(X @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]

    def gradients(self, X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
        p = self.params
        H = np.tanh(X @ p["W1"] + p["b1"])           # the hidden activation tanh(X1), not tanh(X)
        dY = mse_output_gradient(H @ p["W2"] + p["b2"], Y)
        dX1 = (dY @ p["W2"].T) * (1.0 - H ** 2)      # chain rule: back through W2, then through tanh
        return {"W1": X.T @ dX1, "b1": dX1.sum(axis=0), "W2": H.T @ dY, "b2": dY.sum(axis=0)}

    def to_torch(self) -> torch.nn.Module:
        p = self.params
        net = torch.nn.Sequential(torch.nn.Linear(*p["W1"].shape, dtype=torch.float64), torch.nn.Tanh(),
                                  torch.nn.Linear(*p["W2"].shape, dtype=torch.float64))
        with torch.no_grad():
            for layer, w, b in ((net[0], "W1", "b1"), (net[2], "W2", "b2")):
                layer.weight.copy_(torch.from_numpy(p[w].T))
                layer.bias.copy_(torch.from_numpy(p[b]))
        return net


def torch_gradients(model: Model, X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """The model's gradients by torch autograd on its torch twin, named and shaped like
    ``model.params`` (torch's Linear stores W transposed)."""
    net = model.to_torch()
    loss = torch.nn.functional.mse_loss(net(torch.from_numpy(np.asarray(X, np.float64))),
                                        torch.from_numpy(np.asarray(Y, np.float64)))
    loss.backward()
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    names = [("W", "b")] if len(linears) == 1 else [("W1", "b1"), ("W2", "b2")]
    grads = {}
    for layer, (w, b) in zip(linears, names):
        grads[w] = layer.weight.grad.T.numpy()
        grads[b] = layer.bias.grad.numpy()
    return grads


def largest_stable_lr(X: np.ndarray, n_out: int = 2) -> float:
    """The learning rate above which full-batch gradient descent on LinearRegression diverges.

    L is quadratic in θ = (W, b): with X̃ = [X, 1], each output column has the
    Hessian H = 2/(N m) X̃ᵀ X̃. Gradient descent multiplies the error along H's
    top eigenvector by (1 − η λ_max) each step, so it converges iff η < 2/λ_max.
    """
    X_tilde = np.hstack([X, np.ones((len(X), 1))])
    hessian = 2.0 / (len(X) * n_out) * X_tilde.T @ X_tilde
    return 2.0 / float(np.linalg.eigvalsh(hessian)[-1])


def tanh_network_autograd(params: dict[str, np.ndarray], X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """Every gradient of the 4.2 network by torch autograd, intermediate ones included.

    Returns ∂L/∂Ŷ ("Y_hat"), ∂L/∂X1 ("X1") and ∂L/∂θ for W1, b1, W2, b2: the
    reference to compare a hand-written backward pass with, line by line.
    """
    t = {name: torch.tensor(np.asarray(v, np.float64), requires_grad=True) for name, v in params.items()}
    X_t, Y_t = torch.tensor(np.asarray(X, np.float64)), torch.tensor(np.asarray(Y, np.float64))
    X1 = X_t @ t["W1"] + t["b1"]
    Y_hat = torch.tanh(X1) @ t["W2"] + t["b2"]
    X1.retain_grad()
    Y_hat.retain_grad()
    torch.mean((Y_hat - Y_t) ** 2).backward()
    grads = {"Y_hat": Y_hat.grad, "X1": X1.grad, **{name: p.grad for name, p in t.items()}}
    return {name: g.numpy() for name, g in grads.items()}


# ===================================================================== torch
def mlp(sizes: Sequence[int] = (64, 64, 10), *, seed: int = 0, batch_norm: bool = False,
        dtype: torch.dtype = torch.float32) -> torch.nn.Sequential:
    """A multi-layer perceptron: Linear, (BatchNorm,) ReLU, ..., Linear; the same θ for the same seed."""
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out, dtype=dtype))
        if i < len(sizes) - 2:
            if batch_norm:
                layers.append(torch.nn.BatchNorm1d(n_out, dtype=dtype))
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def parameter_count(model: torch.nn.Module) -> int:
    """How many numbers the model learns."""
    return sum(p.numel() for p in model.parameters())


def mlp_parameters(sizes: Sequence[int]) -> int:
    """How many numbers ``mlp(sizes)`` learns, without building it: Σ (n_in + 1) · n_out over
    its layers (a weight matrix and a bias each)."""
    return sum((n_in + 1) * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy of a classifier on (x, y)."""
    logits = model(x)
    return {"loss": float(torch.nn.functional.cross_entropy(logits, y)),
            "accuracy": float((logits.argmax(1) == y).float().mean())}
