"""Data splitting, devices, and the plain functions behind chapters 00 and 01: the loss
averages and their figure, the step and matrix-product timings, the laws' figure."""

import matplotlib
import numpy as np
import pytest
import torch

import nnpar_lite as nl
from nnpar_lite import data
from nnpar_lite.experiments import background
from nnpar_lite.experiments.start_here import loss_averages
from nnpar_lite.models import mlp, parameter_count
from nnpar_lite.widgets.background import laws_figure, step_time_figure
from nnpar_lite.widgets.start_here import loss_average_figure

matplotlib.use("Agg")


def test_article_data_is_seed_4_1():
    X, Y = data.article_data()
    assert X.shape == (4, 2) and Y.shape == (4, 2)
    np.testing.assert_array_equal(Y, X + 1)


@pytest.mark.parametrize("n, k", [(10, 3), (7, 7), (100, 4), (5, 1)])
def test_even_shards_differ_by_at_most_one_sample(n, k):
    sizes = data.even_shard_sizes(n, k)
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1 and len(sizes) == k


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("skew", [0.0, 0.3, 1.0])
def test_skewed_shards_grow_along_the_workers_and_keep_a_sample_each(k, skew):
    sizes = data.skewed_shard_sizes(60, k, skew)
    assert sum(sizes) == 60 and min(sizes) >= 1 and len(sizes) == k
    if skew == 0.0:
        assert max(sizes) - min(sizes) <= 1
    else:
        assert sizes == sorted(sizes)


def test_split_by_sizes_is_the_concatenation():
    x = np.arange(10)
    shards = data.split_by_sizes(x, [1, 3, 6])
    assert [len(s) for s in shards] == [1, 3, 6]
    np.testing.assert_array_equal(np.concatenate(shards), x)


@pytest.mark.parametrize("call, exc, word", [
    (lambda: data.even_shard_sizes(2, 3), ValueError, "2 samples"),
    (lambda: data.even_shard_sizes(5, 0), ValueError, "num_workers must be an integer ≥ 1, got 0"),
    (lambda: data.even_shard_sizes(5.0, 2), ValueError, "num_samples must be an integer ≥ 0, got 5.0"),
    (lambda: data.even_shard_sizes(True, 1), ValueError, "num_samples must be an integer ≥ 0, got True"),
    (lambda: data.skewed_shard_sizes(10, 2, 1.5), ValueError, "skew"),
    (lambda: data.split_by_sizes(np.arange(5), [2, 2]), ValueError, "add up to 4"),
    (lambda: data.split_by_sizes(np.arange(5), [5, 0]), ValueError, "worker 1"),
    (lambda: data.split_by_sizes(np.arange(5), [2.5, 2.5]), ValueError, "shard size of worker 0 must be an integer"),
    (lambda: data.proportional_sizes(5, [1.0, float("nan")]), ValueError, "share of worker 1 must be a positive number"),
    (lambda: data.dirichlet_split(np.arange(6) % 2, 2, 0.0), ValueError, r"alpha \(the Dirichlet concentration\) must"),
])
def test_a_bad_split_is_refused_naming_what_is_wrong(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


def test_the_device_is_the_one_asked_for_or_the_best_there_is():
    assert nl.pick_device("cpu") == torch.device("cpu")
    assert nl.pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            nl.pick_device("cuda")


def test_to_device_converts_numpy_and_keeps_structure(device):
    moved = nl.to_device({"a": np.ones(2), "b": [torch.zeros(3)]}, device)
    assert moved["a"].device.type == device.type and isinstance(moved["b"], list)
    nl.synchronize(device)


def test_only_the_size_weighted_mean_of_shard_losses_is_the_batch_loss():
    r = loss_averages(4, 0.8)
    assert sum(r["sizes"]) == 60
    assert r["weighted by size"] == pytest.approx(r["true mean"], abs=1e-12)
    assert abs(r["plain mean (article)"] - r["true mean"]) > 0.05
    even = loss_averages(4, 0.0)
    assert even["plain mean (article)"] == pytest.approx(even["true mean"], abs=1e-12)
    fig, _ = loss_average_figure(2, 0.5)
    assert len(fig.axes) == 1


def lines_by_label(ax):
    return {line.get_label().split(" =")[0]: line for line in ax.lines}


@pytest.mark.parametrize("k, skew", [(3, 0.6), (1, 0.0), (6, 1.0)])
def test_the_weighted_mean_stays_visible_on_the_true_mean(k, skew):
    """The two lines coincide, so they must differ in how they are drawn."""
    fig, result = loss_average_figure(k, skew)
    ax = fig.axes[0]
    lines = lines_by_label(ax)
    true, weighted = lines["true mean"], lines["weighted by size"]
    np.testing.assert_allclose(weighted.get_ydata(), true.get_ydata(), atol=1e-12)
    assert true.get_linewidth() >= 2 * weighted.get_linewidth()
    assert weighted.get_marker() not in (None, "None", "") and true.get_marker() in (None, "None", "")
    assert weighted.get_zorder() >= true.get_zorder()      # drawn last, on top of the band
    shard_labels = [t for t in ax.texts if t.get_text().startswith("w")]
    assert len(shard_labels) == k
    assert all(t.get_position()[1] >= 1.0 for t in shard_labels), "shard labels belong above the data"
    matplotlib.pyplot.close(fig)


def test_laws_figure_draws_the_measured_points():
    fig = laws_figure(0.9, 64, measured={1: 1.0, 2: 1.6, 4: 2.5})
    measured = [line for line in fig.axes[0].lines if line.get_label().startswith("measured")]
    assert len(measured) == 1 and list(measured[0].get_xdata()) == [1, 2, 4]
    assert list(measured[0].get_ydata()) == [1.0, 1.6, 2.5]
    assert not [line for line in laws_figure(0.9, 64).axes[0].lines if line.get_label().startswith("measured")]


def test_step_time_figure_labels_only_powers_of_ten():
    """Labelled minor ticks ran together ("2×10⁸4×10⁸6×10⁸")."""
    rows = [{"width": w, "flops": f, "seconds": f / 1e11} for w, f in ((128, 1.2e8), (512, 8e8), (2048, 8e9))]
    fig = step_time_figure(rows, 1e11)
    fig.canvas.draw()
    ax = fig.axes[0]
    for axis in (ax.xaxis, ax.yaxis):
        assert all(not label.get_text() for label in axis.get_ticklabels(minor=True))
        assert any(label.get_text() for label in axis.get_ticklabels())
    matplotlib.pyplot.close(fig)


def test_step_timings_count_six_operations_per_parameter_and_sample():
    rows = background.step_timings(widths=(8, 16), batch=4)
    for row in rows:
        parameters = parameter_count(mlp((512, row["width"], row["width"], 10)))
        assert row["parameters"] == parameters == 512 * row["width"] + row["width"] ** 2 + 12 * row["width"] + 10
        assert row["flops"] == 6 * parameters * 4 and row["seconds"] > 0
        assert row["flop/s"] == pytest.approx(row["flops"] / row["seconds"])
    assert background.training_rate(rows) == pytest.approx(np.median([r["flop/s"] for r in rows]))


def test_years_to_train_is_operations_over_rate():
    assert background.years_to_train(5 * background.SECONDS_PER_YEAR * 1e9, 1e9) == pytest.approx(5.0)
    years = background.years_to_train(background.GPT3_TRAINING_FLOPS, 1e11)
    assert 9e4 < years < 1.1e5     # chapter 01's "about 100,000 years at 100 GFLOP/s"


def test_matmul_timing_restores_the_thread_count_and_names_bad_input():
    before = torch.get_num_threads()
    assert background.matmul_seconds(64, threads=1, repeats=1) > 0
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        background.matmul_seconds(64, threads=0)
    assert torch.get_num_threads() == before
    speedups = background.thread_speedups(n=64)
    assert speedups[1] == 1.0 and set(speedups) <= {1, 2, background.usable_cores()}


def test_a_pipeline_across_devices_has_the_unsplit_gradients(device):
    assert background.heterogeneous_gap(["cpu", str(device)]) < 1e-12
    assert background.heterogeneous_gap(["cpu", "cpu"], batch=7, seed=3) < 1e-12


def test_the_per_sample_losses_grow_along_the_batch_and_stay_importable_where_chapter_07_had_them():
    from nnpar_lite.experiments.scaling import per_sample_losses
    losses = data.per_sample_losses(5)
    assert per_sample_losses is data.per_sample_losses
    np.testing.assert_allclose(losses, [0.2, 0.3125, 0.65, 1.2125, 2.0])
    assert np.all(np.diff(losses) > 0)
