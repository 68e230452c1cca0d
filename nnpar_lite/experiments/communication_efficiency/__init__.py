"""Chapter 09's runs (communication efficiency), one module per topic:

    ddp_check               DataParallel against PyTorch's DDP (its buckets recorded by a
                            communication hook) and one process on all rows
    timing                  DataParallel's step timed against DDP's; one step's timeline of
                            backward against the buckets' all-reduces
    powersgd_hook           PowerSGD against torch's ``powerSGD_hook``, bytes counted
    compression_on_digits   error feedback, and every compressor trained on the digits
    asynchrony              stale gradients on the digits and on a quadratic; a parameter server

The algorithms are in :mod:`nnpar_lite.data_parallel` (``DataParallel``),
:mod:`nnpar_lite.compression` and :mod:`nnpar_lite.asynchronous`; here is only what runs,
compares and measures them. Every name the chapter uses is importable from here
(``from nnpar_lite.experiments import communication_efficiency as comm``).
"""

from .asynchrony import (parameter_server_run, quadratic_stability, replay_parameter_server, staleness_sweep,
                         worker_batches)
from .compression_on_digits import COMPRESSORS, compression_run, compression_runs, error_feedback_curves
from .ddp_check import compare_with_ddp, record_ddp_buckets
from .powersgd_hook import against_powersgd_hook, against_powersgd_hook_runs, counting_allreduce_bytes
from .timing import TimedDataParallel, overlap_timeline, time_dataparallel_against_ddp

__all__ = ["parameter_server_run", "quadratic_stability", "replay_parameter_server", "staleness_sweep",
           "worker_batches", "COMPRESSORS", "compression_run", "compression_runs", "error_feedback_curves",
           "compare_with_ddp", "record_ddp_buckets", "against_powersgd_hook", "against_powersgd_hook_runs",
           "counting_allreduce_bytes", "TimedDataParallel", "overlap_timeline", "time_dataparallel_against_ddp"]
