"""Chapter 02's exercises: the article's code (seed 4.1, 4.2), from recall to writing a backward pass.

02.1 the article's gradient against the true one (recall) · 02.2 the largest stable learning
rate (the chapter's widget, then bisection) · 02.3 a planted fault (the gradient check) ·
02.4 the chain rule one layer deeper, a function checked against torch autograd.
"""

from __future__ import annotations


import numpy as np
import torch

from ..data import article_data
from ..models import TanhNetwork, largest_stable_lr, mse_output_gradient
from .core import Case, Exercise, check_number, first_failure, register, report, run_cases, verdict


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


# ------------------------------------------------------------------ 02.1
def check_gradient_ratio(answer) -> bool:
    """The article's ∂L/∂W over the true one, for a batch of 10 samples with 3 outputs: −N·m."""
    return check_number(answer, -30.0, known={
        30.0: ("The size is right, the sign is not: the article writes 2 (Y − Ŷ), the true ∂L/∂Ŷ is 2 (Ŷ − Y)/(N m).",
               "大小对了，符号不对：文章写的是 2 (Y − Ŷ)，正确的 ∂L/∂Ŷ 是 2 (Ŷ − Y)/(N m)。"),
        -8.0: ("−8 belongs to the article's batch, 4 samples × 2 outputs; this batch has other sizes.",
               "−8 属于文章的批次（4 个样本 × 2 个输出）；这个批次的大小不同。")},
        hint=("Compare the article's 2 (Y − Ŷ) with the true 2 (Ŷ − Y)/(N m): the sign, and the mean over N·m entries.",
         "比较文章的 2 (Y − Ŷ) 与正确的 2 (Ŷ − Y)/(N m)：符号，以及对 N·m 个元素取的平均。"))


register(Exercise("02.1", check_gradient_ratio, solution=-30, explanation=(
    "The article's ∂L/∂Ŷ = 2 (Y − Ŷ) is −N·m times the true 2 (Ŷ − Y)/(N m), and ∂L/∂W = Xᵀ ∂L/∂Ŷ carries the "
    "factor along: −10 · 3 = −30.",
    "文章的 ∂L/∂Ŷ = 2 (Y − Ŷ) 是正确的 2 (Ŷ − Y)/(N m) 的 −N·m 倍，∂L/∂W = Xᵀ ∂L/∂Ŷ 带着这个因子：−10 · 3 = −30。")))


# ------------------------------------------------------------------ 02.2
def check_largest_lr(answer) -> bool:
    """The largest η at which full-batch gradient descent on the repaired 4.1 still converges
    on the article's data, within 2 %."""
    expected = largest_stable_lr(article_data()[0])
    try:
        too_large = float(answer) > expected
    except (TypeError, ValueError):
        too_large = False
    hint = (("At that η the loss grows: lower it.", "在这个 η 下损失在增大：调小它。") if too_large else
            ("At that η the loss still falls: go higher, bisecting between a falling and a growing run.",
             "在这个 η 下损失仍在下降：再调大一些，在下降与增长的两次运行之间二分查找。"))
    return check_number(answer, expected, rel=0.02, hint=hint)


register(Exercise("02.2", check_largest_lr, solution=round(largest_stable_lr(article_data()[0]), 4), explanation=(
    "The loss is quadratic in θ = (W, b). With X̃ = [X, 1] each output column has the Hessian H = 2/(N m) X̃ᵀ X̃, and "
    "each step multiplies the error along H's top eigenvector by (1 − η λ_max): it shrinks iff η < 2/λ_max "
    "(models.largest_stable_lr). The article's implicit η = 1 is about 26 times too large, on top of the wrong sign.",
    "损失是 θ = (W, b) 的二次函数。记 X̃ = [X, 1]，每个输出列的 Hessian 为 H = 2/(N m) X̃ᵀ X̃，每一步把 H 最大特征向量"
    "方向上的误差乘以 (1 − η λ_max)：当且仅当 η < 2/λ_max 时误差缩小（models.largest_stable_lr）。文章隐含的 η = 1 "
    "约大了 26 倍，符号还是错的。")))


# ------------------------------------------------------------------ 02.3
def check_planted_fault(answer) -> bool:
    """The name of the parameter whose gradient ``planted_fault_network()`` gets wrong."""
    ok = isinstance(answer, str) and answer.strip() == "W2"
    return verdict(ok, ("W2 it is: its gradient uses the pre-activation X1 where H = tanh(X1) belongs (fault 6).",
                        "正是 W2：它的梯度用了激活前的 X1，而应该用 H = tanh(X1)（错误 6）。"),
                   (f"{answer!r} is not it. Run gradient_check on the planted network and read the verdicts.",
                    f"{answer!r} 不对。对这个网络运行 gradient_check，看每个参数的结论。"))


register(Exercise("02.3", check_planted_fault, solution="W2", explanation=(
    "gradient_check reports W2 wrong and the other three fine: the planted gradients use X1.T @ ∂L/∂Ŷ where "
    "H.T @ ∂L/∂Ŷ belongs.", "gradient_check 报告 W2 错误，其余三个正确：植入的梯度用了 X1.T @ ∂L/∂Ŷ，应为 H.T @ ∂L/∂Ŷ。")))


# ------------------------------------------------------------------ 02.4
def deeper_network_gradient_W1(X: np.ndarray, Y: np.ndarray, params: dict) -> np.ndarray:
    """∂L/∂W1 for X1 = X W1 + b1, H1 = tanh(X1), X2 = H1 W2 + b2, H2 = tanh(X2),
    Ŷ = H2 W3 + b3 and L = mean((Ŷ − Y)²): the chain rule, one layer at a time."""
    H1 = np.tanh(X @ params["W1"] + params["b1"])
    H2 = np.tanh(H1 @ params["W2"] + params["b2"])
    dY = 2.0 * (H2 @ params["W3"] + params["b3"] - Y) / Y.size   # ∂L/∂Ŷ
    dX2 = (dY @ params["W3"].T) * (1.0 - H2 ** 2)                 # back through W3, then through tanh
    dX1 = (dX2 @ params["W2"].T) * (1.0 - H1 ** 2)                # back through W2, then through tanh
    return X.T @ dX1


def _autograd_W1(X: np.ndarray, Y: np.ndarray, params: dict) -> np.ndarray:
    """The reference: torch autograd on the same forward pass."""
    t = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    H1 = torch.tanh(torch.from_numpy(X) @ t["W1"] + t["b1"])
    H2 = torch.tanh(H1 @ t["W2"] + t["b2"])
    torch.mean((H2 @ t["W3"] + t["b3"] - torch.from_numpy(Y)) ** 2).backward()
    return t["W1"].grad.numpy()


def _deeper_cases() -> list[Case]:
    """Batches and layer sizes the learner does not see: one sample, more outputs than hidden units."""
    rng = np.random.default_rng(2024)
    cases = []
    for n, sizes in ((4, (2, 4, 3, 2)), (1, (3, 5, 2, 1)), (7, (2, 3, 6, 4)), (5, (6, 2, 3, 3))):
        params = {}
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            params[f"W{i}"] = rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)
            params[f"b{i}"] = 0.1 * rng.standard_normal(n_out)
        X, Y = rng.standard_normal((n, sizes[0])), rng.standard_normal((n, sizes[-1]))
        cases.append(Case(f"{n} sample{'s' if n > 1 else ''}, layer sizes {sizes}", (X, Y, params)))
    return cases


def _same_array(got, expected: np.ndarray) -> bool:
    try:
        got = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return got.shape == expected.shape and bool(np.allclose(got, expected, rtol=1e-9, atol=1e-12))


CHAIN_RULE_HINT = ("Go back one layer at a time from ∂L/∂Ŷ = 2 (Ŷ − Y)/Y.size: through a weight matrix is "
                   "@ W.T, through tanh is * (1 − H²) with that layer's own activation H; ∂L/∂W1 = X.T @ ∂L/∂X1.",
                   "从 ∂L/∂Ŷ = 2 (Ŷ − Y)/Y.size 出发逐层向后：穿过权重矩阵是 @ W.T，穿过 tanh 是 * (1 − H²)，"
                   "H 是该层自己的激活；∂L/∂W1 = X.T @ ∂L/∂X1。")


def _diagnose(failure) -> tuple[str, str]:
    """A hint that fits the first failing case: a shape, a constant factor, or the chain rule."""
    if failure is None or failure[3] is not None:
        return CHAIN_RULE_HINT
    _, expected, got, _ = failure
    got = np.asarray(got, dtype=np.float64) if got is not None else np.zeros(0)
    if got.shape != expected.shape:
        return (f"∂L/∂W1 has the shape of W1, {expected.shape}. " + CHAIN_RULE_HINT[0],
                f"∂L/∂W1 的形状与 W1 相同，{expected.shape}。" + CHAIN_RULE_HINT[1])
    factor = float(np.sum(got * expected) / np.sum(expected * expected))
    if np.allclose(got, factor * expected, rtol=1e-6, atol=1e-12):
        return (f"Your gradient is {factor:.3g} times the right one: check the sign and the mean in ∂L/∂Ŷ.",
                f"你的梯度是正确值的 {factor:.3g} 倍：检查 ∂L/∂Ŷ 的符号和平均。")
    return CHAIN_RULE_HINT


def check_deeper_gradient(fn) -> bool:
    """Your ``fn(X, Y, params)`` must return ∂L/∂W1 of the 4.2 network with a second tanh
    layer; it runs on batches and layer sizes you do not see, against torch autograd."""
    results = run_cases(fn, _autograd_W1, _deeper_cases())
    return report(results, _same_array, _diagnose(first_failure(results, _same_array)))


register(Exercise("02.4", check_deeper_gradient, solution=deeper_network_gradient_W1, explanation=(
    "Each layer back costs two moves: through the weight matrix (@ W.T), then through tanh (* (1 − H²), with the "
    "activation of that same layer). The article's fault 7 skipped the first move and did the second as a matrix product.",
    "每向后穿过一层需要两步：先穿过权重矩阵（@ W.T），再穿过 tanh（* (1 − H²)，H 为同一层的激活）。"
    "文章的错误 7 跳过了第一步，并把第二步写成了矩阵乘法。")))
