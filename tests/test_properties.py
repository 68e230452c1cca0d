"""Properties that must hold for any input: hypothesis searches for a counter-example."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import nnpar_lite as nl

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64)
shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@st.composite
def workers_and_weights(draw, min_workers=1):
    shape = draw(shapes)
    k = draw(st.integers(min_workers, 5))
    xs = [draw(arrays(np.float64, shape, elements=finite)) for _ in range(k)]
    weights = draw(st.lists(st.floats(0.1, 100.0), min_size=k, max_size=k))
    return xs, weights


@given(workers_and_weights(), st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None)
def test_permuting_workers_changes_nothing(data, random):
    xs, weights = data
    order = list(range(len(xs)))
    random.shuffle(order)
    got = nl.aggregate_gradients([xs[i] for i in order], [weights[i] for i in order])
    np.testing.assert_allclose(got, nl.aggregate_gradients(xs, weights), rtol=1e-12, atol=1e-9)


@given(arrays(np.float64, shapes, elements=finite), st.floats(0.1, 100.0))
@settings(max_examples=60, deadline=None)
def test_one_worker_is_the_identity(x, weight):
    np.testing.assert_array_equal(nl.aggregate_gradients([x], [weight]), x)
    t = torch.from_numpy(x)
    assert torch.equal(nl.average_parameters([t], [weight]), t)


@given(arrays(np.float64, shapes, elements=finite), st.integers(1, 5), st.lists(st.floats(0.1, 100.0), min_size=5, max_size=5))
@settings(max_examples=60, deadline=None)
def test_equal_replicas_average_to_themselves(x, k, weights):
    np.testing.assert_allclose(nl.average_parameters([x.copy() for _ in range(k)], weights[:k]), x,
                               rtol=1e-14, atol=1e-12)


@given(workers_and_weights(), st.floats(1e-3, 1e3))
@settings(max_examples=60, deadline=None)
def test_scaling_all_weights_changes_nothing(data, scale):
    xs, weights = data
    np.testing.assert_allclose(nl.aggregate_gradients(xs, [w * scale for w in weights]),
                               nl.aggregate_gradients(xs, weights), rtol=1e-12, atol=1e-9)


@given(workers_and_weights(min_workers=2))
@settings(max_examples=60, deadline=None)
def test_weighted_mean_lies_between_min_and_max(data):
    xs, weights = data
    got = nl.aggregate_gradients(xs, weights)
    assert np.all(got <= np.max(xs, axis=0) + 1e-9) and np.all(got >= np.min(xs, axis=0) - 1e-9)


@given(st.lists(finite, min_size=1, max_size=6), st.floats(0.0, 10.0))
@settings(max_examples=60, deadline=None)
def test_sgd_step_is_theta_minus_eta_g(values, lr):
    p = np.array(values)
    g = np.array(values[::-1])
    np.testing.assert_allclose(nl.sgd_step(p, g, lr), p - lr * g, rtol=1e-15, atol=1e-12)
