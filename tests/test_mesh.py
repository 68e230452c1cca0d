"""The mesh: rank r = (d · PP + p) · TP + t, every dimension's groups a partition of the ranks
along that coordinate, the embedding groups the first and last stage of each pipeline, and
bad sizes named. (The same groups as torch's init_device_mesh: tests/test_train_gpt.py.)"""

import itertools

import pytest

from nnpar_lite.mesh import Mesh

MESHES = [Mesh(2, 2, 2), Mesh(dp=3, tp=1, pp=2), Mesh(dp=1, tp=4, pp=1), Mesh(dp=2, tp=3, pp=4), Mesh()]


@pytest.mark.parametrize("mesh", MESHES, ids=repr)
def test_coordinates_and_ranks_are_inverse_with_tp_fastest(mesh):
    seen = []
    for r in range(mesh.world_size):
        c = mesh.coordinates(r)
        assert mesh.rank(**c) == r
        seen.append((c["dp"], c["pp"], c["tp"]))
    assert seen == list(itertools.product(range(mesh.dp), range(mesh.pp), range(mesh.tp)))


@pytest.mark.parametrize("mesh", MESHES, ids=repr)
@pytest.mark.parametrize("dimension", ["dp", "pp", "tp"])
def test_each_dimension_partitions_the_ranks_along_its_coordinate(mesh, dimension):
    groups = mesh.groups(dimension)
    assert sorted(r for g in groups for r in g) == list(range(mesh.world_size))
    assert all(len(g) == getattr(mesh, dimension) for g in groups)
    for g in groups:
        coords = [mesh.coordinates(r) for r in g]
        assert [c[dimension] for c in coords] == list(range(len(g)))          # in the dimension's order
        for other in {"dp", "pp", "tp"} - {dimension}:
            assert len({c[other] for c in coords}) == 1                        # nothing else changes
        assert all(mesh.group_of(r, dimension) == g for r in g)


def test_the_2x2x2_mesh_by_hand():
    mesh = Mesh(dp=2, tp=2, pp=2)
    assert mesh.groups("tp") == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert mesh.groups("pp") == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert mesh.groups("dp") == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert mesh.coordinates(6) == {"dp": 1, "pp": 1, "tp": 0}


def test_embedding_groups_join_the_first_and_last_stage():
    mesh = Mesh(dp=2, tp=1, pp=4)
    assert mesh.groups("embedding") == [[0, 3], [4, 7]]
    assert mesh.group_of(1, "embedding") == []             # a middle stage holds no embedding
    assert Mesh(dp=2, tp=2, pp=1).groups("embedding") == []


@pytest.mark.parametrize("call, words", [
    (lambda: Mesh(dp=0), "dp must be an integer ≥ 1, got 0"),
    (lambda: Mesh(tp=2.0), "tp must be an integer"),
    (lambda: Mesh(pp=True), "pp must be an integer"),
    (lambda: Mesh(2, 2, 2).coordinates(8), r"rank must be an integer in 0 … 7 .* got 8"),
    (lambda: Mesh(2, 2, 2).groups("cp"), "dimension must be one of"),
])
def test_bad_input_is_named(call, words):
    with pytest.raises(ValueError, match=words):
        call()
