"""Chapter 12's program: the tiny GPT trained with data, tensor and pipeline parallelism at once
(and ZeRO-1), by torchrun, equal to one process step for step.

One process (the reference):

    python -m nnpar_lite.train_gpt --steps 4 --optimizer sgd --out runs/one

Eight processes on one machine, a 2 × 2 × 2 mesh:

    torchrun --standalone --nproc-per-node 8 -m nnpar_lite.train_gpt --dp 2 --tp 2 --pp 2 --out runs/mesh

Two machines, two processes each (run on each machine with its --node-rank; HOST:PORT
reachable from both):

    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 2 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 -m nnpar_lite.train_gpt --dp 2 --tp 2 --out runs/two

Ranks sit on the mesh of :mod:`nnpar_lite.mesh`; each builds the same GPT (one seed) and keeps
its pipeline stage (:mod:`nnpar_lite.gpt_pipeline`), its blocks made Megatron tensor-parallel
shards (:func:`nnpar_lite.tensor_parallel.shard_gpt_block`). A step: every dp rank takes its
B / dp sequences of the global batch, the stages run chapter 05's 1F1B schedule over them
(:func:`nnpar_lite.pipeline.pipeline_step`), the tied embedding's gradient is summed over
the first and last stage, the gradients are averaged over the dp group
(:func:`nnpar_lite.collectives.allreduce_mean_`, or ZeRO-1's
:class:`nnpar_lite.sharding.ShardedOptimizer` with ``--zero 1``), and the optimizer steps.
``OUT/metrics.json`` holds "losses" (the global batch's mean loss at every step) and
"param_norm" (‖θ‖₂ after training, each parameter counted once over the shards).
``--report`` adds what each rank holds and sends, predicted and measured (``OUT/report.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from . import gpt_pipeline as gp
from .collectives import allreduce_mean_
from .data import corpus_batches
from .gpt import GPT, corpus_config, lm_loss
from .mesh import Mesh, build_groups
from .pipeline import pipeline_step
from .rank_budget import micro_batch_sizes
from .sharding import ShardedOptimizer
from .util import one_thread

OPTIMIZERS = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}
DEFAULT_LR = {"sgd": 0.5, "adamw": 3e-3}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nnpar_lite.train_gpt", description=__doc__.splitlines()[0])
    for name, default, what in (("dp", 1, "data-parallel replicas"), ("tp", 1, "tensor-parallel ranks per stage"),
                                ("pp", 1, "pipeline stages"), ("zero", 0, "1: ZeRO-1 over the dp group"),
                                ("micro-batches", 2, "micro-batches per dp rank and step"), ("steps", 4, ""),
                                ("batch", 8, "global batch, in sequences"), ("layers", 4, ""), ("heads", 4, ""),
                                ("width", 32, "n_embd"), ("block-size", 16, "sequence length"), ("seed", 0, "")):
        parser.add_argument(f"--{name}", type=int, default=default, help=what)
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="sgd")
    parser.add_argument("--lr", type=float, default=None, help="default: 0.5 for sgd, 3e-3 for adamw")
    parser.add_argument("--untied", action="store_true", help="lm_head gets a matrix of its own")
    parser.add_argument("--report", action="store_true", help="print what each rank holds and sends, predicted "
                        "and measured (on a mesh)")
    parser.add_argument("--quiet", action="store_true", help="print nothing (main() returns the metrics)")
    parser.add_argument("--out", type=Path, default=None, help="folder for metrics.json (and report.json)")
    return parser.parse_args(argv)


def check_layout(args: argparse.Namespace, world_size: int):
    """(mesh, GPT config) once every size fits; ValueError naming what does not, before any
    process group exists."""
    mesh = Mesh(dp=args.dp, tp=args.tp, pp=args.pp)
    local = args.batch // args.dp
    checks = [(mesh.world_size != world_size, f"--dp {args.dp} × --tp {args.tp} × --pp {args.pp} = {mesh.world_size} "
               f"ranks, but {world_size} processes were started: make N = dp · tp · pp"),
              (args.heads % args.tp, f"--heads {args.heads} do not divide by --tp {args.tp}"),
              (args.layers % args.pp, f"--layers {args.layers} do not divide by --pp {args.pp}"),
              (args.batch % args.dp, f"--batch {args.batch} does not divide by --dp {args.dp}"),
              (not 1 <= args.micro_batches <= local,
               f"the {local} sequences of a dp rank do not make --micro-batches {args.micro_batches}"),
              (args.zero not in (0, 1), f"--zero must be 0 or 1, got {args.zero}"),
              (args.steps < 1, f"--steps must be ≥ 1, got {args.steps}")]
    problems = [message for failed, message in checks if failed]
    if problems:
        raise ValueError("; ".join(problems))
    config = corpus_config(block_size=args.block_size, n_layer=args.layers, n_head=args.heads, n_embd=args.width,
                           tie_weights=not args.untied)
    return mesh, config


def join() -> tuple[int, int, bool]:
    """(rank, world size, whether this call made the process group): torchrun's variables, a
    group made already (nnpar_lite.distributed.launch), or one process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if "RANK" not in os.environ:
        return 0, 1, False
    dist.init_process_group("gloo")   # the stages' tensors live on the CPU
    return dist.get_rank(), dist.get_world_size(), True


def make_optimizer(params, args, group=None, *, zero: bool = False) -> torch.optim.Optimizer:
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    if zero:
        return ShardedOptimizer(params, OPTIMIZERS[args.optimizer], lr=lr, group=group)
    return OPTIMIZERS[args.optimizer](params, lr=lr)


def train_one_process(args, config, batches) -> dict:
    """The reference: the whole GPT, the whole batch, one process."""
    model = GPT(config, seed=args.seed)
    optimizer = make_optimizer(model.parameters(), args)
    losses, seconds = [], []
    with one_thread():             # as each rank runs: a model this small gains nothing from more threads
        for x, y in batches:
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = lm_loss(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            seconds.append(time.perf_counter() - start)
    with torch.no_grad():
        norm = math.sqrt(sum(float(p.double().pow(2).sum()) for p in model.parameters()))
    return {"losses": losses, "param_norm": norm, "step_seconds": seconds}


class MeshTrainer:
    """One rank's part of the mesh: its coordinates, groups, stage and optimizer."""

    def __init__(self, args, mesh: Mesh, config, rank: int):
        self.args, self.mesh, self.config = args, mesh, config
        self.coords, self.groups = mesh.coordinates(rank), build_groups(mesh)
        model = GPT(config, seed=args.seed)           # the same weights on every rank, then cut
        self.stage = gp.build_stage(model, self.coords["pp"], mesh.pp,
                                    tp_group=self.groups["tp"] if mesh.tp > 1 else None)
        self.optimizer = make_optimizer(self.stage.parameters(), args, self.groups["dp"], zero=bool(args.zero))
        local = args.batch // mesh.dp
        self.rows = slice(self.coords["dp"] * local, (self.coords["dp"] + 1) * local)
        self.micro_sizes = micro_batch_sizes(args.batch, mesh, args.micro_batches)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float | None:
        """One step; the mean loss of this dp rank's sequences on the last stage, else None."""
        stage, groups = self.stage, self.groups
        self.optimizer.zero_grad(set_to_none=True)
        loss = pipeline_step(stage, x[self.rows] if stage.first else None, y[self.rows] if stage.last else None,
                             self.micro_sizes, self.config.block_size * self.config.n_embd, group=groups["pp"])
        gp.sum_tied_embedding_gradient(stage, group=groups["embedding"])
        if not self.args.zero and self.mesh.dp > 1:
            allreduce_mean_([p.grad for p in stage.parameters()], group=groups["dp"])
        self.optimizer.step()   # ZeRO-1 averages over the dp group inside
        return loss

    def global_results(self, losses: list[float | None]) -> tuple[list[float], float]:
        """(the global batch's mean loss per step, ‖θ‖₂ over the shards), on every rank:
        one all-reduce over all ranks of what the last stages' tp rank 0 and dp replica 0 hold."""
        reporter = self.stage.last and self.coords["tp"] == 0
        values = torch.tensor([loss if reporter else 0.0 for loss in losses] + [
            gp.owned_squared_norm(self.stage, tp_rank=self.coords["tp"]) if self.coords["dp"] == 0 else 0.0],
            dtype=torch.float64)
        dist.all_reduce(values)
        return (values[:-1] / self.mesh.dp).tolist(), math.sqrt(float(values[-1]))


def train_on_mesh(args, mesh: Mesh, config, rank: int, batches) -> dict:
    """The run on the mesh: the global losses, ‖θ‖₂, this rank's step times (and, with
    ``--report``, what it held and sent, measured in the first step)."""
    trainer = MeshTrainer(args, mesh, config, rank)
    losses, seconds, report = [], [], None
    for x, y in batches:
        start = time.perf_counter()
        if args.report and not losses:
            from .experiments import capstone          # measuring, only when asked
            report, loss = capstone.measured_step(trainer, x, y)
        else:
            loss = trainer.step(x, y)
        losses.append(loss)
        seconds.append(time.perf_counter() - start)
    if report is not None:
        report["held"] = capstone.held_after_step(trainer)
    losses, norm = trainer.global_results(losses)
    return {"losses": losses, "param_norm": norm, "step_seconds": seconds, "report": report}


def main(argv=None) -> dict:
    """Train; rank 0 prints the losses and writes OUT/metrics.json. Returns the metrics."""
    args = parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", dist.get_world_size() if dist.is_initialized() else 1))
    mesh, config = check_layout(args, world)
    rank, world, made_group = join()
    batches = corpus_batches(args.batch, config.block_size, args.steps, seed=args.seed)
    if world == 1 and not dist.is_initialized():
        metrics = train_one_process(args, config, batches)
    else:
        metrics = train_on_mesh(args, mesh, config, rank, batches)
    metrics["layout"] = {"dp": mesh.dp, "tp": mesh.tp, "pp": mesh.pp, "zero": args.zero,
                         "micro_batches": args.micro_batches, "optimizer": args.optimizer}
    report = metrics.pop("report", None)
    if args.report and report is not None:
        from .experiments import capstone
        metrics["report"] = capstone.gather_report(report, args, mesh, config, rank)
    if rank == 0:
        finish(metrics, args.out, quiet=args.quiet)
    if made_group:
        dist.barrier()      # meet before leaving (see nnpar_lite.distributed)
        dist.destroy_process_group()
    return metrics


def summary(metrics: dict) -> str:
    """Every step's loss, ‖θ‖₂, and the report's table when there is one."""
    lines = [f"step {step}  loss {loss:.6f}" for step, loss in enumerate(metrics["losses"])]
    lines.append(f"param_norm {metrics['param_norm']:.6f}")
    if "report" in metrics:
        from .experiments.capstone import report_table
        lines.append(report_table(metrics["report"]))
    return "\n".join(lines)


def finish(metrics: dict, out: Path | None, *, quiet: bool = False) -> None:
    """Rank 0 prints the summary (unless ``quiet``), and writes metrics.json (and report.json)
    into ``out``."""
    if not quiet:
        print(summary(metrics), flush=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        report = metrics.pop("report", None)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
        if report is not None:
            (out / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
            metrics["report"] = report


if __name__ == "__main__":
    main()
