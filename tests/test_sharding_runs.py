"""Chapter 08's harness apart from the ranks: the table that sets the measured bytes beside the
calculator's, and says whether they agree, written out by hand; the figure drawn from it; a
worker name that does not exist, refused."""

import pytest

from nnpar_lite import costmodel
from nnpar_lite.experiments import sharding as runs
from nnpar_lite.models import mlp, mlp_parameters, parameter_count


def row(stage, held, predicted, dtype=None):
    return {"stage": stage, "N": 2, "sizes": (4, 3, 2), "compute dtype": dtype, "trace": None,
            "held": {**held, "other": 0, "total": sum(held.values())}, "predicted": {**predicted,
                                                                                    "total": sum(predicted.values())}}


def test_the_table_agrees_only_when_every_part_and_the_total_agree():
    same = {"parameters": 100, "gradients": 100, "optimizer state": 200}
    moved = {"parameters": 100, "gradients": 150, "optimizer state": 150}      # the same total, parts differ
    table = runs.memory_table([row(1, same, same), row(1, same, moved), row(3, same, moved, "float16"),
                               row(3, same, {**same, "gradients": 101}, "float16")])
    assert [r["agree"] for r in table] == [True, False, True, False]
    assert table[0] == {"stage": 1, "N": 2, "precision": "fp32", **same, "other": 0, "measured": 400,
                        "predicted": 400, "agree": True}
    assert table[2]["precision"] == "fp16 compute"


def test_the_memory_figure_draws_the_fp32_rows_of_the_table():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nnpar_lite.widgets.sharding import memory_figure
    same = {"parameters": 1024, "gradients": 1024, "optimizer state": 2048}
    fig = memory_figure(runs.memory_table([row(0, same, same), row(3, same, same, "float16")]))
    bars = [p.get_height() for p in fig.axes[0].patches]
    assert bars == [1.0, 1.0, 2.0]                         # KiB of the one fp32 row, part by part
    plt.close(fig)


@pytest.mark.parametrize("sizes", [(7, 5, 3), runs.MEMORY_SIZES, (64, 10)])
def test_the_parameter_count_of_an_mlp_is_known_before_building_it(sizes):
    assert mlp_parameters(sizes) == parameter_count(mlp(sizes))
    assert costmodel.training_memory(mlp_parameters(sizes))["parameters"] == 4 * parameter_count(mlp(sizes))


def test_a_worker_that_does_not_exist_is_named():
    with pytest.raises(ValueError, match=r"no sharding worker named \['zero_against_sgd'\]"):
        runs.sharding_runs(0, 1, [("zero_against_sgd", {})])
