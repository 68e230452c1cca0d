"""Chapter 10's exercise checks, proven: the solution passes, typical wrong answers fail, and the
numbers the prompts state are those the checks compute with."""

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from exercise_proofs import assert_check_is_proven
from nnpar_lite.exercises import long_sequences as ex

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def merge_by_averaging(out_a, lse_a, out_b, lse_b):
    """Averages the two outputs, as if both blocks held as much of the softmax's mass."""
    return (out_a + out_b) / 2, torch.maximum(lse_a, lse_b)


def merge_without_the_maximum(out_a, lse_a, out_b, lse_b):
    """Right on paper, but e^lse overflows for scores near 1000: inf / inf."""
    a, b = torch.exp(lse_a), torch.exp(lse_b)
    return (a * out_a + b * out_b) / (a + b), torch.log(a + b)


def merge_forgetting_the_lse(out_a, lse_a, out_b, lse_b):
    """The right output, but the old lse handed on: the next merge weighs the blocks wrongly."""
    lse = torch.logaddexp(lse_a, lse_b)
    return torch.exp(lse_a - lse) * out_a + torch.exp(lse_b - lse) * out_b, lse_a


def ring_without_passing(q, k, v):
    """Attends to its own block only: the ranks never exchange K and V."""
    from nnpar_lite.context_parallel import block_attention
    return block_attention(q, k, v, None, None, causal=False)[0]


def ring_averaging_the_blocks(q, k, v):
    """Passes K and V round the ring but averages the blocks' outputs instead of merging them."""
    from nnpar_lite.collectives import pass_right
    from nnpar_lite.context_parallel import block_attention
    world = dist.get_world_size()
    total = torch.zeros_like(q)
    for step in range(world):
        total += block_attention(q, k, v, None, None, causal=False)[0]
        if step < world - 1:
            arriving_k, arriving_v = torch.empty_like(k), torch.empty_like(v)
            pass_right(k, arriving_k)
            pass_right(v, arriving_v)
            k, v = arriving_k, arriving_v
    return total / world


RIGHT = ex.ulysses_megabytes(**ex.ULYSSES)
WRONG_ANSWERS = {
    "10.1": [(RIGHT / 2, "forward pass only"), (RIGHT * 8, "s/N positions"), (2952.79, "Four tensors")],
    "10.2": [(2_097_152, "contiguous split"), (1_048_576, "diagonal block whole"), (262_144, "half of each")],
    "10.3": [(merge_by_averaging, "blocks of 3 and 4 keys"), (merge_without_the_maximum, "e^1000 overflows"),
             (merge_forgetting_the_lse, "blocks of 3 and 4 keys")],
    "10.4": [(ring_without_passing, "rank 0 of 3"), (ring_averaging_the_blocks, "rank 0 of 3")],
}


@pytest.mark.parametrize("exercise_id", sorted(WRONG_ANSWERS))
def test_check_is_proven(capsys, exercise_id):
    assert_check_is_proven(capsys, exercise_id, WRONG_ANSWERS[exercise_id])


def _prompt(path: Path, heading: str) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return next("".join(c["source"]) for c in cells if c["cell_type"] == "markdown" and heading in "".join(c["source"]))


@pytest.mark.parametrize("edition, one, two, words", [
    ("10_long_sequences.ipynb", "### Exercise 1", "### Exercise 2", ("2 bytes", "zigzag")),
    ("zh/10_long_sequences.ipynb", "### 练习 1", "### 练习 2", ("2 字节", "之字形"))])
def test_the_prompts_state_the_numbers_the_checks_use(edition, one, two, words):
    first, second = _prompt(NOTEBOOKS / edition, one), _prompt(NOTEBOOKS / edition, two)
    assert f"s = {ex.ULYSSES['seq_len']:,}" in first and f"N = {ex.ULYSSES['world_size']}" in first
    assert f"h = {ex.ULYSSES['hidden']}" in first and f"b = {ex.ULYSSES['batch']}" in first and words[0] in first
    assert f"s = {ex.ZIGZAG['seq_len']}" in second and f"N = {ex.ZIGZAG['world_size']}" in second and words[1] in second
