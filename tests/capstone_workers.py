"""Workers for the capstone's tests: several layouts of train_gpt on one set of ranks, the mesh's
groups against torch's init_device_mesh, and a tied embedding whose gradient is not summed."""

import torch.distributed as dist

from nnpar_lite import gpt_pipeline
from nnpar_lite.mesh import Mesh, build_groups
from nnpar_lite.train_gpt import main


def layouts_on_these_ranks(rank: int, world_size: int, argvs: list[list[str]]) -> list[dict]:
    """train_gpt once per argument list, on the same ranks (each run makes its own groups)."""
    return [main(argv) for argv in argvs]


def groups_three_ways(rank: int, world_size: int, sizes: tuple[int, int, int]) -> dict:
    """This rank's groups as torch's init_device_mesh makes them, as build_groups makes them
    (global ranks), and as Mesh enumerates them; and build_groups' word on a mesh of another size."""
    from torch.distributed.device_mesh import init_device_mesh

    torchs = init_device_mesh("cpu", sizes, mesh_dim_names=("dp", "pp", "tp"))
    ours = Mesh(dp=sizes[0], pp=sizes[1], tp=sizes[2])
    built = build_groups(ours)
    found = {name: (dist.get_process_group_ranks(torchs.get_group(name)), ours.group_of(rank, name))
             for name in ("dp", "pp", "tp")}
    found.update({f"built {name}": (dist.get_process_group_ranks(g) if g is not None else [],
                                    ours.group_of(rank, name)) for name, g in built.items()})
    try:
        build_groups(Mesh(dp=3))
    except ValueError as error:
        found["refused"] = str(error)
    return found


def without_the_tied_sum(rank: int, world_size: int, argv: list[str]) -> dict:
    """train_gpt with the tied embedding's gradient left unsummed across the first and last stage."""
    gpt_pipeline.sum_tied_embedding_gradient = lambda stage, group=None: None
    return main(argv)
