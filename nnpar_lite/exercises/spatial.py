"""Chapter 06's exercises: spatial parallelism, tiles and halos (Dryden et al. 2019)."""

from __future__ import annotations

from ..spatial import halo_rows
from .core import Case, Exercise, check_number, register, report, run_cases

register(Exercise(
    "06.1",
    lambda answer: check_number(answer, 33 ** 2 - 32 ** 2, hint=(
        "A 3×3 'same' convolution needs (k − 1)/2 = 1 row and column on each side, but only on the sides where "
        "there is a neighbour: beyond the image's edge lies zero padding, which nobody sends. Count the corner.",
        "3×3 的 'same' 卷积在每一侧需要 (k − 1)/2 = 1 行和 1 列，但只在有邻居的那几侧：图像边缘之外是零填充，"
        "没有人发送。别忘了角上的像素。")),
    solution=65,
    explanation=("The tile owns 32 × 32 pixels and reads a 33 × 33 window inside the image: one row below, one "
                 "column to the right, and the corner pixel of the diagonal neighbour: 33² − 32² = 65. Above and to "
                 "the left is zero padding.",
                 "该图块拥有 32 × 32 个像素，读取图像内 33 × 33 的窗口：下方一行、右侧一列，以及对角邻居的一个角像素："
                 "33² − 32² = 65。上方和左侧是零填充。")))

register(Exercise(
    "06.2",
    lambda answer: check_number(answer, 28 ** 2 - 24 ** 2, hint=(
        "An interior tile has neighbours on all four sides and at the four corners; a 5×5 kernel needs "
        "(k − 1)/2 = 2 rows and columns on each side, k − 1 = 4 per dimension in all.",
        "内部图块在四条边和四个角上都有邻居；5×5 卷积核在每一侧需要 (k − 1)/2 = 2 行和 2 列，每个维度共 k − 1 = 4。")),
    solution=208,
    explanation=("The tile owns 96/4 = 24 rows and columns and reads a (24 + 4) × (24 + 4) window: "
                 "28² − 24² = 208 halo pixels, 36 % of its 576. With a 2×2 grid the same kernel's tiles would pay "
                 "far less per owned pixel: surface against volume.",
                 "该图块拥有 96/4 = 24 行和 24 列，读取 (24 + 4) × (24 + 4) 的窗口：28² − 24² = 208 个光环（halo）像素，"
                 "是其 576 个像素的 36 %。若用 2×2 的网格，同样的卷积核每个自有像素的代价会小得多：表面积对体积。")))


def tile_halo_rows(height, num_tiles, tile, kernel):
    """The input rows row tile ``tile`` needs for an odd k×k 'same' convolution, clipped to the image."""
    from nnpar_lite.util import even_bounds

    first, stop = even_bounds(height, num_tiles)[tile]      # the rows the tile owns
    halo = (kernel - 1) // 2                                 # on each side
    return list(range(max(first - halo, 0), min(stop + halo, height)))


ROW_CASES = [Case(f"height {h}, {n} tiles, tile {t}, {k}×{k} kernel", (h, n, t, k)) for h, n, t, k in
             [(11, 3, 0, 3), (11, 3, 1, 3), (11, 3, 2, 5), (10, 4, 1, 7), (10, 4, 3, 7), (7, 1, 0, 5),
              (9, 9, 4, 3), (12, 5, 4, 1), (100, 7, 3, 9), (13, 2, 1, 15)]]


def same_rows(got, expected) -> bool:
    """Are ``got`` (a range, list or tuple of row numbers) the rows of ``expected``?"""
    try:
        return [int(r) for r in got] == list(expected)
    except (TypeError, ValueError):
        return False


def check_tile_halo_rows(fn) -> bool:
    """Your ``fn(height, num_tiles, tile, kernel)`` must return the input rows the tile reads, checked
    against :func:`~nnpar_lite.spatial.halo_rows` on unseen cases: uneven tiles, one tile, a halo
    wider than a tile, a 1×1 kernel."""
    return report(run_cases(fn, halo_rows, ROW_CASES), same=same_rows,
                  hint=("Cut the rows with even_bounds(height, num_tiles) (larger tiles first), widen the tile's "
                        "rows by (k − 1)/2 on each side, and clip to 0 … height − 1.",
                        "用 even_bounds(height, num_tiles) 切分各行（较大的图块在前），把图块的行向两侧各扩展 "
                        "(k − 1)/2，并裁剪到 0 … height − 1。"))


register(Exercise("06.3", check_tile_halo_rows, solution=tile_halo_rows, explanation=(
    "The same rows as nnpar_lite.spatial.halo_rows. Rows beyond the image are zero padding: each tile makes them "
    "itself, nobody sends them. A halo wider than the neighbouring tile reaches the tile after it.",
    "与 nnpar_lite.spatial.halo_rows 相同。图像之外的行是零填充：每个图块自己补零，没有人发送。"
    "光环比相邻图块还宽时，会延伸到再下一个图块。")))
