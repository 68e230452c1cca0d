"""Chapter 02's exercise checks, proven: the solution passes, typical wrong answers fail with a
hint that says what is wrong."""

import numpy as np
import pytest

from nnpar_lite.data import article_data, standardize
from nnpar_lite.exercises.article_code import planted_fault_network
from nnpar_lite.gradcheck import gradient_check
from nnpar_lite.models import LinearRegression, largest_stable_lr


def with_the_articles_output_gradient(X, Y, params):
    """The chain rule right, ∂L/∂Ŷ as the article writes it: 2 (Y − Ŷ)."""
    H1 = np.tanh(X @ params["W1"] + params["b1"])
    H2 = np.tanh(H1 @ params["W2"] + params["b2"])
    dY = 2.0 * (Y - (H2 @ params["W3"] + params["b3"]))
    dX2 = (dY @ params["W3"].T) * (1.0 - H2 ** 2)
    return X.T @ ((dX2 @ params["W2"].T) * (1.0 - H1 ** 2))


def skipping_the_second_tanh(X, Y, params):
    """Back through W3 but not through the second tanh."""
    H1 = np.tanh(X @ params["W1"] + params["b1"])
    H2 = np.tanh(H1 @ params["W2"] + params["b2"])
    dY = 2.0 * (H2 @ params["W3"] + params["b3"] - Y) / Y.size
    return X.T @ (((dY @ params["W3"].T) @ params["W2"].T) * (1.0 - H1 ** 2))


def transposed(X, Y, params):
    """The right numbers, laid out as W1.T."""
    from nnpar_lite.exercises.article_code import deeper_network_gradient_W1
    return deeper_network_gradient_W1(X, Y, params).T


def raising(X, Y, params):
    return params["W4"]


WRONG_ANSWERS = {
    "02.1": [(30, "the sign is not"), (-8, "the article's batch"), (-10, "N·m entries"), (-1 / 30, "upside down"),
             (8, "is not it")],
    "02.2": [(0.05, "the loss grows"), (1.0, "the loss grows"), (0.03, "still falls"),
             (0.037, "near, but not within 2.00% of the answer. At that η the loss still falls")],
    "02.3": [("W1", "gradient_check"), ("b2", "gradient_check"), (2, "gradient_check")],
    "02.4": [(with_the_articles_output_gradient, "times the right one"),
             (skipping_the_second_tanh, "case 4 samples, layer sizes (2, 4, 3, 2): first difference at index"),
             (transposed, "laid out as W1.T"), (raising, "KeyError")],
}



def test_the_largest_stable_rate_is_where_training_turns():
    """02.2's answer, found the way the learner is asked to: below it the loss falls, above it grows."""
    X, Y = article_data()
    eta = largest_stable_lr(X)
    assert LinearRegression(seed=0).fit(X, Y, epochs=2000, lr=0.98 * eta)[-1] < 1e-8
    assert LinearRegression(seed=0).fit(X, Y, epochs=2000, lr=1.02 * eta)[-1] > 1e10


def test_the_planted_fault_is_the_one_gradient_check_finds():
    X, Y = article_data()
    net = planted_fault_network()
    found = gradient_check(lambda: net.loss(standardize(X), Y), net.params, net.gradients(standardize(X), Y))
    assert found.failing() == ["W2"]


def test_the_function_check_names_the_first_failing_case(capsys):
    from nnpar_lite.exercises import check
    assert not check("02.4", skipping_the_second_tanh)
    out = capsys.readouterr().out
    assert "case 4 samples, layer sizes (2, 4, 3, 2): first difference at index (0, 0): expected" in out
    assert "got" in out
