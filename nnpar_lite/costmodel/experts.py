"""What a mixture of experts costs (chapter 11): an expert's capacity, the layer's weights,
those one token uses, and the bytes of expert parallelism's all-to-all."""

from __future__ import annotations

import math

from ..util import real_number, whole_number


# A layer of E experts, each a two-layer MLP d → h → d, behind a gate (a d × E matrix); each
# token goes to k of the experts. Fedus et al. (Switch Transformer, JMLR 2022) and Lepikhin
# et al. (GShard, ICLR 2021) for capacity; expert parallelism puts E/N experts on each of N ranks.
def expert_capacity(tokens: int, top_k: int, num_experts: int, capacity_factor: float) -> int:
    """C = ⌈capacity_factor · T · k / E⌉: the most tokens one expert takes from a batch of T
    tokens (Switch Transformer, eq. 3, with k choices per token). The product is rounded to 9
    decimals before the ceiling, so that 1.1 · 1000 · 2 / 8 gives 275, not 276."""
    t, k = whole_number("tokens", tokens, minimum=0), whole_number("top_k", top_k)
    e = whole_number("num_experts", num_experts)
    real_number("capacity_factor", capacity_factor, above=0)
    return math.ceil(round(capacity_factor * t * k / e, 9))


def moe_parameters(d_model: int, d_hidden: int, num_experts: int) -> int:
    """Weights of a MoE layer: the gate's d·E, and E experts of 2·d·h + h + d (two matrices,
    two biases). E times one MLP's, plus the gate."""
    d, h, e = (whole_number(name, value) for name, value in
               (("d_model", d_model), ("d_hidden", d_hidden), ("num_experts", num_experts)))
    return d * e + e * (2 * d * h + h + d)


def moe_active_parameters(d_model: int, d_hidden: int, num_experts: int, top_k: int) -> int:
    """Weights one token multiplies by: the whole gate (d·E) and k of the E experts. The
    compute per token, about 2 operations per weight, follows k, not E."""
    d, h, e = (whole_number(name, value) for name, value in
               (("d_model", d_model), ("d_hidden", d_hidden), ("num_experts", num_experts)))
    whole_number("top_k", top_k, maximum=e)                 # one to all of the num_experts experts
    return d * e + top_k * (2 * d * h + h + d)


def expert_all_to_all_bytes(tokens: int, top_k: int, d_model: int, world_size: int,
                            bytes_per_element: int = 4) -> float:
    """Bytes one rank sends in one all-to-all of expert parallelism when the routing is
    balanced and nothing is dropped: each of its T tokens goes to k experts, a fraction
    (N − 1)/N of them on other ranks, d numbers each:

        T · k · (N − 1)/N · d · bytes

    The dispatch sends this, the combine sends as much back; backward repeats both."""
    t, k = whole_number("tokens", tokens, minimum=0), whole_number("top_k", top_k)
    d, n = whole_number("d_model", d_model), whole_number("world_size", world_size)
    return t * k * (n - 1) / n * d * whole_number("bytes_per_element", bytes_per_element)
