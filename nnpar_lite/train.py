"""Chapter 03's data-parallel training as a program, for torchrun (one machine or many).

One machine, two processes:

    torchrun --standalone --nproc-per-node 2 -m nnpar_lite.train --out runs/dp

Two machines (run on each, with its own --node-rank; HOST:PORT reachable from both):

    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 2 \\
             --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m nnpar_lite.train --out runs/dp

Without torchrun it runs as a single process. An MLP learns the 8×8 digits; each
step takes one global batch, every rank its shard of it (uneven when the batch
does not divide), gradients averaged with ``allreduce_gradients`` weighted by
shard size, so every world size follows the same trajectory up to float32
rounding: the sums are taken in another order, so the final parameters of 1, 2 or
3 processes differ by about 1e-7, not bit for bit, and the checksum may differ in
its last digit (tests/test_data_parallel.py checks 1, 2 and 3 processes).
Rank 0 prints the loss of the global batch per step and a checksum of the final
parameters, and writes ``log.txt`` and ``final_params.pt`` into ``--out`` and
nowhere else.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .data import digits, even_shard_sizes
from .data_parallel import allreduce_gradients
from .models import mlp


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nnpar_lite.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for log.txt and final_params.pt")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default=None, help="gloo or nccl (default: nccl with a GPU for every rank "
                        "on this machine, else gloo)")
    return parser.parse_args(argv)


def checksum(model: torch.nn.Module) -> str:
    """Two numbers that change with any parameter: Σθ and Σ|θ|, in float64."""
    flat = torch.cat([p.detach().double().reshape(-1).cpu() for p in model.parameters()])
    return f"sum {flat.sum().item():.6f}  abs-sum {flat.abs().sum().item():.6f}"


def default_backend() -> str:
    """NCCL when this machine has a GPU for each of its ranks (torchrun's LOCAL_WORLD_SIZE), else
    gloo: NCCL has no CPU path, and two ranks cannot share one GPU under NCCL."""
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= ranks_here else "gloo"


def join_group(backend: str | None) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, distributed?) from the variables torchrun sets; one process without them."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, torch.device("cpu"), False
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend)
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device, True


def main(argv=None) -> str:
    args = parse_args(argv)
    rank, world, device, distributed = join_group(args.backend)
    X, y = (torch.from_numpy(a) for a in digits())
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(args.seed))
    model = mlp((64, args.hidden, 10), seed=args.seed).to(device)
    sizes = even_shard_sizes(args.global_batch, world)
    local = slice(sum(sizes[:rank]), sum(sizes[:rank + 1]))
    lines = []
    for step in range(args.steps):
        batch = order[(step * args.global_batch) % len(X):][:args.global_batch]
        x, target = X[batch][local].to(device), y[batch][local].to(device)
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        # The loss of the global batch: Σ_r n_r L_r / Σ_r n_r (seed 3.1, weighted).
        total = torch.stack([loss.detach() * len(x), torch.tensor(float(len(x)), device=device)])
        if distributed:
            allreduce_gradients(model, weight=len(x))
            dist.all_reduce(total)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.grad, alpha=-args.lr)
        lines.append(f"step {step:3d}  loss {(total[0] / total[1]).item():.6f}")
        if rank == 0:
            print(lines[-1], flush=True)
    return finish(args.out, model, lines, rank, world, distributed)


def finish(out: Path, model: torch.nn.Module, lines: list[str], rank: int, world: int, distributed: bool) -> str:
    """Rank 0 prints the checksum and writes log.txt and final_params.pt into ``out``; all leave."""
    summary = f"world size {world}  final parameters: {checksum(model)}"
    if rank == 0:
        print(summary, flush=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "log.txt").write_text("\n".join(lines + [summary]) + "\n", encoding="utf-8")
        torch.save({n: p.detach().cpu() for n, p in model.named_parameters()}, out / "final_params.pt")
    if distributed:
        dist.barrier()  # meet before leaving: see distributed.py
        dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    main()
