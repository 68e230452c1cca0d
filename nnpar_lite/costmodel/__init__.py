"""Cost formulas, and nothing else: they return seconds, bytes or a fraction from the sizes
given; the chapters measure and compare (:mod:`nnpar_lite.experiments`). One module per topic,
every name importable from here (``costmodel.ring_allreduce_time``):

    communication    the alpha-beta model of the collectives, its fit, the bytes a rank sends
    pipeline         the bubble, a step's length, the activations a stage holds
    laws             overlap, efficiency, Amdahl and Gustafson, workers of different speeds
    memory           training memory per device: model states, ZeRO, tensor and pipeline splits
    long_sequences   activations and traffic when ranks share a sequence (chapter 10)
    experts          capacity, weights and all-to-all bytes of a mixture of experts (chapter 11)
    mesh             what one rank of the capstone's dp × tp × pp mesh holds and sends (chapter 12)
"""

from .communication import (ALLREDUCE_TIMES, communication_per_epoch, fit_alpha_beta, parameter_server_time,
                            ring_allreduce_bytes, ring_allreduce_time, tree_allreduce_time, zero_communication)
from .experts import expert_all_to_all_bytes, expert_capacity, moe_active_parameters, moe_parameters
from .laws import (amdahl_speedup, data_parallel_step_time, gustafson_speedup, heterogeneous_step,
                   overlap_hides_communication, scaling_efficiency)
from .long_sequences import (SEQUENCE_METHODS, causal_ring_work, gpt_block_activations, sequence_parallel_activations,
                             sequence_parallel_bytes)
from .memory import (DEVICE_COUNTS, MODEL_BILLIONS, PRECISIONS, REPLICATED_ACTIVATIONS, memory_by_layout,
                     memory_layouts, model_state_bytes, training_memory)
from .mesh import (adam_state_bytes, gpt_block_activation_values, gpt_head_activation_values, gpt_rank_tensors,
                   mesh_step_time, zero_chunk_elements)
from .pipeline import bubble_fraction, peak_activations, pipeline_step_time

__all__ = [
    "ALLREDUCE_TIMES", "communication_per_epoch", "fit_alpha_beta", "parameter_server_time", "ring_allreduce_bytes",
    "ring_allreduce_time", "tree_allreduce_time", "zero_communication",
    "expert_all_to_all_bytes", "expert_capacity", "moe_active_parameters", "moe_parameters",
    "amdahl_speedup", "data_parallel_step_time", "gustafson_speedup", "heterogeneous_step",
    "overlap_hides_communication", "scaling_efficiency",
    "SEQUENCE_METHODS", "causal_ring_work", "gpt_block_activations", "sequence_parallel_activations",
    "sequence_parallel_bytes",
    "DEVICE_COUNTS", "MODEL_BILLIONS", "PRECISIONS", "REPLICATED_ACTIVATIONS", "memory_by_layout", "memory_layouts",
    "model_state_bytes", "training_memory",
    "adam_state_bytes", "gpt_block_activation_values", "gpt_head_activation_values", "gpt_rank_tensors",
    "mesh_step_time", "zero_chunk_elements",
    "bubble_fraction", "peak_activations", "pipeline_step_time",
]
