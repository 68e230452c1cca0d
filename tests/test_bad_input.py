"""Every bad input gets a ValueError or TypeError that names the worker and the leaf,
and leaves the inputs (and a given out) as they were."""

import copy
import math

import numpy as np
import pytest
import torch

import nnpar_lite as nl


def grads_np(k=3):
    return [{"fc": {"w": np.full((2, 3), float(i)), "b": np.full(3, float(i))}} for i in range(k)]


def snapshot(obj):
    return copy.deepcopy(obj)


def assert_same(a, b):
    """Deep equality for trees with arrays (NaN equal to NaN)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def bad(grads, i, path, value):
    """A copy of grads with worker i's leaf at path (a tuple of keys) replaced by value."""
    grads = copy.deepcopy(grads)
    node = grads[i]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return grads


CASES = [
    # (id, args for aggregate_gradients, exception, words the message must hold)
    ("empty", ([],), ValueError, ["empty"]),
    ("not a list", (np.ones(3),), TypeError, ["list"]),
    ("missing key", ([{"fc": {"w": np.ones((2, 3)), "b": np.ones(3)}}, {"fc": {"w": np.ones((2, 3))}}],),
     ValueError, ["worker 1", "lacks leaf 'fc.b'", "['fc.w']"]),
    ("list length", ([[np.ones(2), np.ones(2)], [np.ones(2)]],), ValueError, ["worker 1", "lacks leaf '[1]'"]),
    ("extra leaf", ([{"w": np.ones(2)}, {"w": np.ones(2), "v": np.ones(2)}],), ValueError,
     ["worker 1", "extra leaf 'v'"]),
    ("shape", (bad(grads_np(), 2, ("fc", "w"), np.ones((3, 2))),), ValueError, ["worker 2", "'fc.w'", "(3, 2)", "(2, 3)"]),
    ("dtype", (bad(grads_np(), 1, ("fc", "b"), np.ones(3, np.float32)),), TypeError, ["worker 1", "'fc.b'", "float32"]),
    ("numpy mixed with torch", (bad(grads_np(), 1, ("fc", "b"), torch.ones(3, dtype=torch.float64)),), TypeError,
     ["worker 1", "'fc.b'", "numpy", "torch"]),
    ("string leaf", (bad(grads_np(), 2, ("fc", "w"), "oops"),), TypeError, ["worker 2", "'fc.w'", "str"]),
    ("None leaf", (bad(grads_np(), 0, ("fc", "b"), None),), TypeError, ["worker 0", "'fc.b'", "NoneType"]),
    ("integer leaf", ([np.arange(3), np.arange(3)],), TypeError, ["worker 0", "int64", "floating"]),
    ("NaN", (bad(grads_np(), 2, ("fc", "b"), np.array([0.0, np.nan, 1.0])),), ValueError, ["worker 2", "'fc.b'", "NaN"]),
    ("Inf", (bad(grads_np(), 1, ("fc", "w"), np.full((2, 3), np.inf)),), ValueError, ["worker 1", "'fc.w'", "Inf"]),
    ("weight count", (grads_np(), [1, 2]), ValueError, ["2 weights", "3 workers"]),
    ("negative weight", (grads_np(), [1, -2, 3]), ValueError, ["worker 1", "-2"]),
    ("all-zero weights", (grads_np(), [0, 0, 0]), ValueError, ["zero"]),
    ("NaN weight", (grads_np(), [1, float("nan"), 1]), ValueError, ["worker 1", "finite"]),
    ("Inf weight", (grads_np(), [1, 1, float("inf")]), ValueError, ["worker 2", "finite"]),
    ("string weight", (grads_np(), [1, "2", 1]), TypeError, ["worker 1", "str"]),
    ("weights as a string", (grads_np(), "123"), TypeError, ["weights"]),
]


@pytest.mark.parametrize("formula", [nl.aggregate_gradients, nl.average_parameters])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named_and_changes_nothing(case, formula):
    _, args, exc, words = case
    before = snapshot(args)
    with pytest.raises(exc) as info:
        formula(*args)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"
    assert_same(args, before)


def test_torch_nan_named_and_inputs_unchanged():
    grads = [{"a": torch.zeros(5), "b": [torch.ones(2), torch.ones(3)]} for _ in range(4)]
    grads[3]["b"][1][1] = float("nan")
    before = snapshot(grads)
    with pytest.raises(ValueError, match=r"worker 3, leaf 'b\[1\]' holds NaN"):
        nl.aggregate_gradients(grads)
    assert_same(grads, before)


def test_nan_in_a_worker_of_weight_zero_is_still_caught():
    grads = [np.ones(4), np.array([1.0, np.inf, 1.0, 1.0])]
    with pytest.raises(ValueError, match="worker 1"):
        nl.aggregate_gradients(grads, [1, 0])


def test_overflow_of_finite_inputs_is_reported_as_overflow():
    # Coefficients 1/10, 8/10, 1/10 round up in float32 and sum to just over 1,
    # so a mean of three copies of the largest float32 rounds to Inf.
    big = np.full(3, np.finfo(np.float32).max, dtype=np.float32)
    with pytest.raises(ValueError, match="overflows at leaf '<root>'"):
        nl.aggregate_gradients([big, big, big], [1, 8, 1])


def test_devices_that_differ():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine: a device mismatch needs two devices")
    grads = [torch.ones(3), torch.ones(3, device="cuda")]
    with pytest.raises(ValueError, match=r"worker 1, leaf '<root>': device cuda"):
        nl.aggregate_gradients(grads)


def test_devices_that_differ_checked_without_a_gpu():
    """The device check runs on the meta device, which every torch has."""
    grads = [torch.ones(3), torch.ones(3, device="meta")]
    with pytest.raises(ValueError, match=r"worker 1, leaf '<root>': device meta differs"):
        nl.aggregate_gradients(grads)


@pytest.mark.parametrize("out, exc, words", [
    ({"fc": {"w": np.zeros((2, 3))}}, ValueError, ["out", "leaves"]),
    ({"fc": {"w": np.zeros((3, 2)), "b": np.zeros(3)}}, ValueError, ["'fc.w'", "(3, 2)"]),
    ({"fc": {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3)}}, TypeError, ["'fc.w'", "float32"]),
    ({"fc": {"w": torch.zeros(2, 3, dtype=torch.float64), "b": np.zeros(3)}}, TypeError, ["'fc.w'", "torch"]),
])
def test_bad_out_is_named_and_untouched(out, exc, words):
    grads = grads_np()
    before_out, before_grads = snapshot(out), snapshot(grads)
    with pytest.raises(exc) as info:
        nl.aggregate_gradients(grads, out=out)
    for word in words:
        assert word in str(info.value)
    assert_same(out, before_out)
    assert_same(grads, before_grads)


def test_out_sharing_memory_with_an_input_is_refused():
    grads = grads_np()
    with pytest.raises(ValueError, match="shares memory with the gradient of worker 1"):
        nl.aggregate_gradients(grads, out=grads[1])
    readonly = {"fc": {"w": np.zeros((2, 3)), "b": np.zeros(3)}}
    readonly["fc"]["b"].flags.writeable = False
    with pytest.raises(ValueError, match="'fc.b' is read-only"):
        nl.aggregate_gradients(grads, out=readonly)


def test_modules_mixed_with_trees():
    """A module stands for its parameters, so it averages with a replica's parameter dict, but
    not with a state_dict that also holds buffers."""
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    got = nl.average_parameters([a, dict(b.named_parameters())])
    torch.testing.assert_close(got["weight"], (a.weight + b.weight).detach() / 2)
    bn = torch.nn.BatchNorm1d(2)
    with pytest.raises(ValueError, match="parameter of worker 1 has an extra leaf 'running_mean'"):
        nl.average_parameters([bn, bn.state_dict()])


@pytest.mark.parametrize("losses, weights, exc, words", [
    ([], None, ValueError, ["empty"]),
    ([1.0, "2"], None, TypeError, ["worker 1", "str"]),
    ([1.0, None], None, TypeError, ["worker 1", "NoneType"]),
    ([1.0, float("nan")], None, ValueError, ["worker 1", "nan"]),
    ([torch.tensor(1.0), torch.tensor(float("inf"))], None, ValueError, ["worker 1", "inf"]),
    ([torch.tensor(1.0), torch.ones(3)], None, ValueError, ["worker 1", "shape (3,)"]),
    ([torch.tensor(1.0), 2.0], None, TypeError, ["worker 1", "do not mix numpy and torch"]),
    ([1.0, 2.0], [1.0], ValueError, ["1 weights", "2 workers"]),
    ([1.0, 2.0], [1.0, -1.0], ValueError, ["worker 1", "finite number ≥ 0"]),
    ([1.0, 2.0], [0, 0], ValueError, ["zero"]),
])
def test_average_losses_bad_input(losses, weights, exc, words):
    with pytest.raises(exc) as info:
        nl.average_losses(losses, weights)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("lr, exc, word", [
    ("0.1", TypeError, "str"), (None, TypeError, "NoneType"), (True, TypeError, "bool"),
    (float("nan"), ValueError, "nan"), (-0.1, ValueError, "-0.1"), (torch.tensor(0.1), TypeError, "Tensor"),
])
def test_sgd_step_bad_learning_rate(lr, exc, word):
    params, grads = {"w": np.ones(3)}, {"w": np.ones(3)}
    with pytest.raises(exc, match="learning rate") as info:
        nl.sgd_step(params, grads, lr)
    assert word in str(info.value)


@pytest.mark.parametrize("grads, exc, words", [
    ({"w": np.ones(4)}, ValueError, ["'w'", "(4,)", "(3,)"]),
    ({"v": np.ones(3)}, ValueError, ["['v']", "['w']"]),
    ({"w": np.ones(3, np.float32)}, TypeError, ["'w'", "float32"]),
    ({"w": torch.ones(3, dtype=torch.float64)}, TypeError, ["'w'", "torch"]),
    ({"w": np.array([1.0, np.nan, 1.0])}, ValueError, ["gradient", "'w'", "NaN"]),
])
def test_sgd_step_bad_gradients_change_nothing(grads, exc, words):
    params = {"w": np.ones(3)}
    with pytest.raises(exc) as info:
        nl.sgd_step(params, grads, 0.1, out=params)
    for word in words:
        assert word in str(info.value)
    np.testing.assert_array_equal(params["w"], np.ones(3))


def test_sgd_step_nan_parameter():
    with pytest.raises(ValueError, match="parameter leaf 'w' holds NaN"):
        nl.sgd_step({"w": np.array([np.inf])}, {"w": np.ones(1)}, 0.1)


def test_check_finite_false_skips_only_the_nan_check():
    """The hot path of a training loop may skip the one read of the result that finds NaN or Inf;
    every other check still runs, and by default the NaN is named."""
    grads = [np.ones(3), np.array([1.0, np.nan, 1.0])]
    out = np.zeros(3)
    nl.aggregate_gradients(grads, out=out, check_finite=False)
    assert np.isnan(out[1]) and out[0] == 1.0
    with pytest.raises(ValueError, match="worker 1"):
        nl.aggregate_gradients(grads, out=out)
    with pytest.raises(ValueError, match="shape"):
        nl.aggregate_gradients([np.ones(3), np.ones(4)], out=out, check_finite=False)
