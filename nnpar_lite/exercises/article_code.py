"""Chapter 02's exercises: the article's code (seed 4.1, 4.2), from recall to writing a backward pass.

02.1 the article's gradient against the true one (recall) · 02.2 the largest stable learning
rate (the chapter's widget, then bisection) · 02.3 a planted fault (the gradient check) ·
02.4 the chain rule one layer deeper, a function checked against torch autograd.
"""

from __future__ import annotations

import numpy as np
import torch

from ..article import NeuralNetwork41
from ..data import article_data
from ..models import TanhNetwork, largest_stable_lr, mse_output_gradient
from .core import (Case, Exercise, Probe, as_number, check_number, number_exercise, register, report, run_cases,
                   same_values, verdict)


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
def article_gradient_ratio(N: int, m: int) -> float:
    """The article's ∂L/∂W (seed 4.1's ``backprop``, as written) over the true one
    (:func:`~nnpar_lite.models.mse_output_gradient`), on a batch of N samples with m outputs."""
    rng = np.random.default_rng(0)
    X, Y, Y_hat = rng.standard_normal((N, 2)), rng.standard_normal((N, m)), rng.standard_normal((N, m))
    article, _ = NeuralNetwork41.backprop(None, X, Y, Y_hat)       # the article's method uses no attribute
    true = X.T @ mse_output_gradient(Y_hat, Y)
    return float(np.sum(article * true) / np.sum(true * true))     # the factor between the two


number_exercise(
    "02.1", stated={"N": 10, "m": 3, "N_article": 4, "m_article": 2},
    answer=lambda N, m, N_article, m_article: article_gradient_ratio(N, m), rel=1e-9,
    wrong=[(lambda N, m, **_: -article_gradient_ratio(N, m),
            ("The size is right, the sign is not: the article writes 2 (Y − Ŷ), the true ∂L/∂Ŷ is 2 (Ŷ − Y)/(N m).",
             "大小对了，符号不对：文章写的是 2 (Y − Ŷ)，正确的 ∂L/∂Ŷ 是 2 (Ŷ − Y)/(N m)。")),
           (lambda N_article, m_article, **_: article_gradient_ratio(N_article, m_article),
            ("That ratio belongs to the article's batch, 4 samples × 2 outputs; this batch has other sizes.",
             "这个比值属于文章的批量（4 个样本 × 2 个输出）；这个批量的大小不同。")),
           (lambda N, m, **_: article_gradient_ratio(N, 1),
            ("The true ∂L/∂Ŷ averages over all N·m entries of Ŷ, outputs included.",
             "正确的 ∂L/∂Ŷ 对 Ŷ 的全部 N·m 个元素取平均，输出维也算在内。")),
           (lambda N, m, **_: 1 / article_gradient_ratio(N, m),
            ("The fraction is upside down: the article's gradient over the true one.",
             "分数颠倒了：应是文章的梯度除以正确的梯度。"))],
    hint=("Compare the article's ∂L/∂Ŷ = 2 (Y − Ŷ) with the true 2 (Ŷ − Y)/(N m): their sign, and the mean over the "
          "N·m entries. ∂L/∂W = Xᵀ ∂L/∂Ŷ carries the factor along.",
          "比较文章的 ∂L/∂Ŷ = 2 (Y − Ŷ) 与正确的 2 (Ŷ − Y)/(N m)：符号，以及对 N·m 个元素取的平均。"
          "∂L/∂W = Xᵀ ∂L/∂Ŷ 把这个因子原样带过去。"),
    explanation=("The article's ∂L/∂Ŷ = 2 (Y − Ŷ) is −N·m times the true 2 (Ŷ − Y)/(N m), and ∂L/∂W = Xᵀ ∂L/∂Ŷ "
                 "carries the factor along: −{N} · {m} = {answer}.",
                 "文章的 ∂L/∂Ŷ = 2 (Y − Ŷ) 是正确的 2 (Ŷ − Y)/(N m) 的 −N·m 倍，∂L/∂W = Xᵀ ∂L/∂Ŷ 带着这个因子："
                 "−{N} · {m} = {answer}。"))


# ------------------------------------------------------------------ 02.2
LARGEST_LR = largest_stable_lr(article_data()[0])


def check_largest_lr(answer) -> bool:
    """The largest η at which full-batch gradient descent on the repaired 4.1 still converges
    on the article's data, within 2 %."""
    value = as_number(answer)
    hint = (("At that η the loss grows: lower it.", "在这个 η 下损失在增大：调小它。") if value and value > LARGEST_LR else
            ("At that η the loss still falls: go higher, bisecting between a falling and a growing run.",
             "在这个 η 下损失仍在下降：再调大一些，在下降与增长的两次运行之间二分查找。"))
    return check_number(answer, LARGEST_LR, rel=0.02, hint=hint)


register(Exercise("02.2", check_largest_lr, solution=round(LARGEST_LR, 4), hint=(
    "Bisect: keep an η whose run converges and one whose run diverges (or stops with ValueError), try the middle, "
    "keep the half where the behaviour changes; stop when the two are within 1 % of each other.",
    "二分查找：保留一个收敛的 η 和一个发散（或以 ValueError 停止）的 η，试两者的中点，保留行为发生变化的那一半；"
    "两者相差不到 1 % 时停止。"), explanation=(
    "The loss is quadratic in θ = (W, b). With X̃ = [X, 1] each output column has the Hessian H = 2/(N m) X̃ᵀ X̃, and "
    "each step multiplies the error along H's top eigenvector by (1 − η λ_max): it shrinks iff η < 2/λ_max "
    f"(models.largest_stable_lr). The article's implicit η = 1 is about {1 / LARGEST_LR:.0f} times too large, on top "
    "of the wrong sign.",
    "损失是 θ = (W, b) 的二次函数。记 X̃ = [X, 1]，每个输出列的 Hessian 为 H = 2/(N m) X̃ᵀ X̃，每一步把 H 最大特征向量"
    "方向上的误差乘以 (1 − η λ_max)：当且仅当 η < 2/λ_max 时误差缩小（models.largest_stable_lr）。文章隐含的 η = 1 "
    f"约大了 {1 / LARGEST_LR:.0f} 倍，符号还是错的。")))


# ------------------------------------------------------------------ 02.3
def check_planted_fault(answer) -> bool:
    """The name of the parameter whose gradient ``planted_fault_network()`` gets wrong."""
    ok = isinstance(answer, str) and answer.strip() == "W2"
    return verdict(ok, ("W2 it is: its gradient uses the pre-activation X1 where H = tanh(X1) belongs (fault 6).",
                        "正是 W2：它的梯度用了激活前的 X1，而应该用 H = tanh(X1)（错误 6）。"),
                   (f"{answer!r} is not it. Run gradient_check on the planted network and read the verdicts.",
                    f"{answer!r} 不对。对这个网络运行 gradient_check，看每个参数的结论。"))


register(Exercise("02.3", check_planted_fault, solution="W2", hint=(
    "gradient_check compares each parameter's gradient with finite differences and says which fail; read its "
    "verdict for all four, W1, b1, W2 and b2.",
    "gradient_check 把每个参数的梯度与有限差分比较，并指出哪些不对；逐一看 W1、b1、W2、b2 的结论。"), explanation=(
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
        cases.append(Case((f"{n} sample{'s' if n > 1 else ''}, layer sizes {sizes}",
                           f"{n} 个样本，各层大小 {sizes}"), (X, Y, params)))
    return cases


def _factor(expected: np.ndarray, got) -> dict | bool:
    """The constant c with got = c · expected, when there is one (a wrong sign or scale)."""
    got = np.asarray(got, dtype=np.float64)
    factor = float(np.sum(got * expected) / np.sum(expected * expected))
    return bool(np.allclose(got, factor * expected, rtol=1e-6, atol=1e-12)) and {"factor": f"{factor:.3g}"}


SCALED = Probe(lambda expected, got, facts: _factor(expected, got),
               ("Your gradient is {factor} times the right one: check the sign and the mean in ∂L/∂Ŷ.",
                "你的梯度是正确值的 {factor} 倍：检查 ∂L/∂Ŷ 的符号和平均。"))
TRANSPOSED = Probe(lambda expected, got, facts: same_values(np.asarray(got).T, expected),
                   ("Those are the right numbers laid out as W1.T: ∂L/∂W1 has the shape of W1, X.T @ ∂L/∂X1.",
                    "数值对了，但排成了 W1.T 的样子：∂L/∂W1 与 W1 形状相同，即 X.T @ ∂L/∂X1。"))


def check_deeper_gradient(fn) -> bool:
    """Your ``fn(X, Y, params)`` must return ∂L/∂W1 of the 4.2 network with a second tanh
    layer; it runs on batches and layer sizes you do not see, against torch autograd."""
    return report(run_cases(fn, _autograd_W1, _deeper_cases()), same_values, probes=(TRANSPOSED, SCALED))


register(Exercise("02.4", check_deeper_gradient, solution=deeper_network_gradient_W1, hint=(
    "Go back one layer at a time from ∂L/∂Ŷ = 2 (Ŷ − Y)/Y.size: through a weight matrix is @ W.T, through tanh is "
    "* (1 − H²) with that layer's own activation H; ∂L/∂W1 = X.T @ ∂L/∂X1.",
    "从 ∂L/∂Ŷ = 2 (Ŷ − Y)/Y.size 出发逐层向后：穿过权重矩阵是 @ W.T，穿过 tanh 是 * (1 − H²)，"
    "H 是该层自己的激活；∂L/∂W1 = X.T @ ∂L/∂X1。"), explanation=(
    "Each layer back costs two moves: through the weight matrix (@ W.T), then through tanh (* (1 − H²), with the "
    "activation of that same layer). The article's fault 7 skipped the first move and did the second as a matrix "
    "product.",
    "每向后穿过一层需要两步：先穿过权重矩阵（@ W.T），再穿过 tanh（* (1 − H²)，H 为同一层的激活）。"
    "文章的错误 7 跳过了第一步，并把第二步写成了矩阵乘法。")))
