"""nnpar-lite: the parallel optimisation of neural networks, as a runnable workbook.

The article's formulas (:mod:`nnpar_lite.formulas`) are exported here; each
scheme has a module of its own.
"""

from .devices import available_devices, pick_device, synchronize, to_device
from .formulas import aggregate_gradients, average_losses, average_parameters, sgd_step

__all__ = [
    "average_losses", "aggregate_gradients", "average_parameters", "sgd_step",
    "pick_device", "available_devices", "synchronize", "to_device",
]
__version__ = "0.1.0"
