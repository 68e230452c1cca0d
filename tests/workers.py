"""Workers only the tests launch: ranks that misbehave. Spawned ranks import them by name
from this folder, which pytest puts on sys.path (and spawn hands on to its children)."""

import os
import sys
import time

import torch.distributed as dist


def hang_on_rank(rank: int, world_size: int, bad_rank: int) -> int:
    """Rank ``bad_rank`` sleeps for ever; the others finish their work and wait."""
    if rank == bad_rank:
        while True:
            time.sleep(0.1)
    return rank


def die_on_rank(rank: int, world_size: int, bad_rank: int) -> int:
    """Rank ``bad_rank`` exits at once without a word, as a crashed process does."""
    if rank == bad_rank:
        sys.stdout.flush()
        os._exit(3)
    dist.barrier()
    return rank
