"""The device mesh of 3-D parallelism: N = dp · pp · tp ranks laid out as a grid, and one
process group per line of the grid in each dimension.

Rank r sits at coordinates (d, p, t), tensor-parallel fastest:

    r = (d · PP + p) · TP + t

so the TP ranks of one pipeline stage are neighbours (on one machine, where its fast links
are: Megatron-LM puts tensor parallelism innermost for that reason, Narayanan et al., SC21).
Each rank belongs to one group per dimension:

* its **tp group**: the ranks with its (d, p), which split every block's matrices;
* its **pp group**: the ranks with its (d, t), the stages a micro-batch flows through;
* its **dp group**: the ranks with its (p, t), which hold the same shard of the same stage and
  average its gradients;
* its **embedding group** (pp > 1, tied embeddings): the first and last stage of its pp group,
  which both hold the token embedding and sum its gradient (Megatron's embedding group).

The enumerations below are plain Python (a figure or an exercise can use them without
torch.distributed); :func:`build_groups` makes the process groups, with ``new_group`` as
Megatron-LM's ``parallel_state`` does. ``torch.distributed.device_mesh.init_device_mesh``
makes the same dp, pp and tp groups (tests/test_mesh.py checks it), but it has no embedding
group, which cuts across its dimensions, and it arrived in torch 2.2 as a prototype whose
API still moves; explicit groups show every rank list the program uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from .util import whole_number

DIMENSIONS = ("dp", "pp", "tp")


@dataclass(frozen=True)
class Mesh:
    """The sizes of the three dimensions; N = dp · pp · tp ranks."""
    dp: int = 1
    tp: int = 1
    pp: int = 1

    def __post_init__(self):
        for name in DIMENSIONS:
            whole_number(name, getattr(self, name))

    @property
    def world_size(self) -> int:
        return self.dp * self.pp * self.tp

    def coordinates(self, rank: int) -> dict[str, int]:
        """{"dp": d, "pp": p, "tp": t} of ``rank``: r = (d · PP + p) · TP + t."""
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < self.world_size:
            raise ValueError(f"rank must be an integer in 0 … {self.world_size - 1} for a mesh of "
                             f"dp = {self.dp}, pp = {self.pp}, tp = {self.tp}, got {rank!r}")
        return {"dp": rank // (self.pp * self.tp), "pp": rank // self.tp % self.pp, "tp": rank % self.tp}

    def rank(self, dp: int, pp: int, tp: int) -> int:
        """The rank at coordinates (dp, pp, tp)."""
        return (dp * self.pp + pp) * self.tp + tp

    def groups(self, dimension: str) -> list[list[int]]:
        """Every group of one dimension ("dp", "pp", "tp" or "embedding"), each a list of
        ranks in the order of that dimension's coordinate (pp groups: stage 0 first)."""
        if dimension == "embedding":
            return [[g[0], g[-1]] for g in self.groups("pp")] if self.pp > 1 else []
        if dimension not in DIMENSIONS:
            raise ValueError(f"dimension must be one of {DIMENSIONS + ('embedding',)}, got {dimension!r}")
        others = [d for d in DIMENSIONS if d != dimension]
        found = {}
        for r in range(self.world_size):
            c = self.coordinates(r)
            found.setdefault((c[others[0]], c[others[1]]), []).append(r)
        return list(found.values())

    def group_of(self, rank: int, dimension: str) -> list[int]:
        """The ranks of ``rank``'s group in ``dimension`` (empty: no embedding group)."""
        return next((g for g in self.groups(dimension) if rank in g), [])


def build_groups(mesh: Mesh) -> dict:
    """This rank's process groups, {"dp", "pp", "tp", "embedding"}, made with ``new_group``.
    Every rank must call it: each group is created by all ranks, in the same order. The
    embedding entry is None when this rank is not a first or last stage, or pp = 1."""
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    if world != mesh.world_size:
        raise ValueError(f"the mesh dp = {mesh.dp} × pp = {mesh.pp} × tp = {mesh.tp} needs {mesh.world_size} "
                         f"processes, but {world} were started")
    mine = {}
    for dimension in DIMENSIONS + ("embedding",):
        mine[dimension] = None
        for ranks in mesh.groups(dimension):
            group = dist.new_group(ranks)
            if rank in ranks:
                mine[dimension] = group
    return mine
