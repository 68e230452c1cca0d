"""Chapter 02: the article's code fails as shown; the repaired networks are right."""

import numpy as np
import pytest
import torch

from nnpar_lite import article, data_parallel, model_averaging, models
from nnpar_lite.data import article_data, standardize
from nnpar_lite.exercises.article_code import planted_fault_network
from nnpar_lite.gradcheck import gradient_check, numerical_gradient

X, Y = article_data()


def test_article_41_as_written_crashes_on_shapes():
    np.random.seed(0)
    with pytest.raises(ValueError, match=r"operands could not be broadcast together with shapes \(4,2\) \(4,3\)"):
        article.NeuralNetwork41().train(X, Y, epochs=1000, batch_size=4)


def test_article_41_with_shapes_fixed_diverges():
    np.random.seed(0)
    nn = article.NeuralNetwork41()
    nn.W, nn.b = np.random.randn(2, 2), np.random.randn(2)
    nn.train(X, Y, epochs=10, batch_size=4)
    assert nn.loss(Y, nn.forward(X)) > 1e40


def test_article_41_gradient_is_minus_eight_times_the_true_one():
    np.random.seed(1)
    nn = article.NeuralNetwork41()
    nn.W, nn.b = np.random.randn(2, 2), np.random.randn(2)
    dW, db = nn.backprop(X, Y, nn.forward(X))
    numeric = numerical_gradient(lambda: nn.loss(Y, nn.forward(X)), nn.W)
    np.testing.assert_allclose(dW / numeric, -Y.size, rtol=1e-6)
    assert np.shape(db) == ()


def test_article_42_as_written_crashes_on_shapes_then_in_backprop():
    np.random.seed(0)
    with pytest.raises(ValueError, match=r"shapes \(4,2\) \(4,3\)"):
        article.NeuralNetwork42().train(X, Y, epochs=1000, batch_size=4)
    nn = article.NeuralNetwork42()
    nn.W2, nn.b2 = np.random.randn(4, 2), np.random.randn(2)
    with pytest.raises(ValueError, match=r"shapes \(4,2\) and \(4,4\) not aligned"):
        nn.train(X, Y, epochs=1000, batch_size=4)


CASES = [(models.LinearRegression, dict(n_in=3, n_out=2)), (models.LinearRegression, dict(n_in=1, n_out=4)),
         (models.TanhNetwork, dict(n_in=2, n_hidden=4, n_out=2)), (models.TanhNetwork, dict(n_in=5, n_hidden=3, n_out=1))]


@pytest.mark.parametrize("n_samples", [1, 3, 7])
@pytest.mark.parametrize("cls, sizes", CASES, ids=lambda c: getattr(c, "__name__", str(c)))
def test_repaired_gradients_match_autograd_and_finite_differences(cls, sizes, n_samples):
    rng = np.random.default_rng(n_samples)
    model = cls(**sizes, seed=n_samples)
    n_in, n_out = sizes["n_in"], sizes["n_out"]
    Xr, Yr = rng.standard_normal((n_samples, n_in)), rng.standard_normal((n_samples, n_out))
    ours = model.gradients(Xr, Yr)
    reference = models.torch_gradients(model, Xr, Yr)
    for name, g in ours.items():
        np.testing.assert_allclose(g, reference[name], rtol=1e-7, atol=1e-12)
    check = gradient_check(lambda: model.loss(Xr, Yr), model.params, ours, tolerance=1e-7)
    assert check.passed, str(check)


def test_tanh_network_autograd_intermediates():
    model = models.TanhNetwork(seed=2)
    ref = models.tanh_network_autograd(model.params, X, Y)
    ours = model.gradients(X, Y)
    for name in ours:
        np.testing.assert_allclose(ours[name], ref[name], rtol=1e-10, atol=1e-13)
    H = np.tanh(X @ model.params["W1"] + model.params["b1"])
    dY = models.mse_output_gradient(H @ model.params["W2"] + model.params["b2"], Y)
    np.testing.assert_allclose(ref["Y_hat"], dY, rtol=1e-12)
    np.testing.assert_allclose(ref["X1"], (dY @ model.params["W2"].T) * (1 - H ** 2), rtol=1e-10, atol=1e-15)


def test_gradient_check_flags_a_planted_fault_and_passes_a_correct_one():
    Xs = standardize(X)
    planted = planted_fault_network()
    verdict = gradient_check(lambda: planted.loss(Xs, Y), planted.params, planted.gradients(Xs, Y))
    assert not verdict.passed and verdict.failing() == ["W2"]
    correct = models.TanhNetwork(seed=3)
    assert gradient_check(lambda: correct.loss(Xs, Y), correct.params, correct.gradients(Xs, Y)).passed


def test_gradient_check_restores_parameters_and_names_bad_input():
    model = models.LinearRegression(seed=0)
    before = {k: v.copy() for k, v in model.params.items()}
    gradient_check(lambda: model.loss(X, Y), model.params, model.gradients(X, Y))
    for k in before:
        np.testing.assert_array_equal(model.params[k], before[k])
    with pytest.raises(ValueError, match=r"missing for \['b'\]"):
        gradient_check(lambda: 0.0, model.params, {"W": model.params["W"]})
    with pytest.raises(TypeError, match="'W' is float32"):
        gradient_check(lambda: 0.0, {"W": np.ones(2, np.float32)}, {"W": np.ones(2)})


@pytest.mark.parametrize("shard_sizes", [[7], [3, 4], [1, 2, 4], [2, 2, 2, 1]])
def test_k_worker_41_equals_full_batch_gradient_descent(shard_sizes):
    rng = np.random.default_rng(0)
    Xr, Yr = rng.standard_normal((7, 3)), rng.standard_normal((7, 2))
    reference = models.LinearRegression(n_in=3, seed=1)
    reference_losses = reference.fit(Xr, Yr, epochs=25, lr=0.1)
    workers = models.LinearRegression(n_in=3, seed=1)
    losses = data_parallel.train_simulated(workers, Xr, Yr, num_workers=len(shard_sizes), epochs=25, lr=0.1,
                                           shard_sizes=shard_sizes)
    for k in reference.params:
        np.testing.assert_allclose(workers.params[k], reference.params[k], rtol=0, atol=1e-12)
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-12)


def test_plain_mean_of_uneven_shards_is_not_full_batch():
    rng = np.random.default_rng(0)
    Xr, Yr = rng.standard_normal((7, 3)), rng.standard_normal((7, 2))
    reference = models.LinearRegression(n_in=3, seed=1)
    reference.fit(Xr, Yr, epochs=5, lr=0.1)
    plain = models.LinearRegression(n_in=3, seed=1)
    data_parallel.train_simulated(plain, Xr, Yr, num_workers=3, epochs=5, lr=0.1, shard_sizes=[1, 2, 4], weighted=False)
    assert np.abs(plain.params["W"] - reference.params["W"]).max() > 1e-3


@pytest.mark.parametrize("shard_sizes", [[3, 4], [1, 2, 4], [2, 2, 2, 1]])
def test_sub_models_averaged_every_step_equal_full_batch(shard_sizes):
    rng = np.random.default_rng(1)
    Xr, Yr = rng.standard_normal((7, 2)), rng.standard_normal((7, 2))
    reference = models.TanhNetwork(seed=4)
    reference.fit(Xr, Yr, epochs=20, lr=0.1)
    averaged = models.TanhNetwork(seed=4)
    model_averaging.train_local_sgd(averaged, Xr, Yr, num_workers=len(shard_sizes), rounds=20, local_steps=1,
                                    lr=0.1, shard_sizes=shard_sizes)
    for k in reference.params:
        np.testing.assert_allclose(averaged.params[k], reference.params[k], rtol=0, atol=1e-12)


def test_local_sgd_rejects_bad_local_steps():
    with pytest.raises(ValueError, match="local_steps"):
        model_averaging.train_local_sgd(models.TanhNetwork(), X, Y, num_workers=2, rounds=1, local_steps=0, lr=0.1)


def test_largest_stable_lr_separates_convergence_from_divergence():
    eta = models.largest_stable_lr(X)
    assert models.LinearRegression(seed=0).fit(X, Y, epochs=2000, lr=0.97 * eta)[-1] < 1e-8
    assert models.LinearRegression(seed=0).fit(X, Y, epochs=2000, lr=1.03 * eta)[-1] > 1e10


def test_to_torch_computes_the_same_function():
    for model in (models.LinearRegression(seed=5), models.TanhNetwork(seed=5)):
        out = model.to_torch()(torch.from_numpy(X)).detach().numpy()
        np.testing.assert_allclose(out, model.forward(X), rtol=1e-12)


def test_chapter_02_widget_function():
    from nnpar_lite.widgets.article_code import training_curves
    curves = training_curves(num_workers=3, lr=0.03, epochs=40)["curves"]
    np.testing.assert_allclose(curves["4.1 3 workers, gradients weighted by shard"][1],
                               curves["4.1 one worker, whole batch"][1], rtol=1e-10)
    steps, losses = curves["4.2 3 sub-models, averaged every 10 steps"]
    assert steps == [0, 10, 20, 30, 40] and len(losses) == 5


def test_the_widget_cuts_a_longer_run_to_the_same_curves_as_a_short_one():
    """training_figure trains every (K, η) once for the steps slider's whole range and cuts the
    runs to the slider's value: the cut curves must be those of a run of that length."""
    import matplotlib
    import matplotlib.pyplot
    matplotlib.use("Agg")
    from nnpar_lite.experiments.article_code import training_curves
    from nnpar_lite.widgets.article_code import MOST_STEPS, training_figure

    fig, shown = training_figure(num_workers=3, lr=0.031, epochs=40)
    matplotlib.pyplot.close(fig)
    direct = training_curves(3, 0.031, 40)["curves"]
    assert MOST_STEPS > 40 and shown["curves"].keys() == direct.keys()
    for name, (steps, losses) in direct.items():
        assert shown["curves"][name][0] == steps
        np.testing.assert_allclose(shown["curves"][name][1], losses, rtol=1e-12)


def test_gradient_check_prints_verdicts_not_rounding_errors():
    """A passing gradient's error is the machine's rounding: printed as below the tolerance."""
    model = models.LinearRegression(seed=0)
    passing = str(gradient_check(lambda: model.loss(X, Y), model.params, model.gradients(X, Y)))
    assert "below 1e-6       ok" in passing and "e-1" not in passing and "e-0" not in passing
    wrong = {name: -g for name, g in model.gradients(X, Y).items()}
    failing = str(gradient_check(lambda: model.loss(X, Y), model.params, wrong))
    assert "W          1                WRONG" in failing and "wrong: W, b" in failing


def test_a_diverging_fit_stops_with_one_error_and_no_warnings():
    import warnings

    X, Y = article_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                # an overflow warning would fail here
        with pytest.raises(ValueError, match="gradient leaf 'W' holds NaN or Inf"):
            models.LinearRegression(seed=0).fit(X, Y, epochs=2000, lr=0.5)
