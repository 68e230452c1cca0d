"""Chapter 06's exercises: spatial parallelism, tiles and halos (Dryden et al. 2019)."""

from __future__ import annotations

from ..spatial import halo_rows
from .core import Case, Exercise, Probe, number_exercise, register, report, run_cases, same_sequence
from .own_work import written_without

def halo_pixels(size: int, grid: int, row: int, col: int, k: int) -> int:
    """Pixels tile (``row``, ``col``) of a ``grid`` × ``grid`` cut of a ``size`` × ``size`` image
    receives for a k×k 'same' convolution: the window :func:`~nnpar_lite.spatial.halo_rows` gives
    in each dimension, less the tile's own pixels (its window for a 1×1 kernel)."""
    window = len(halo_rows(size, grid, row, k)) * len(halo_rows(size, grid, col, k))
    return window - len(halo_rows(size, grid, row, 1)) * len(halo_rows(size, grid, col, 1))


def _no_corners(size: int, grid: int, row: int, col: int, k: int) -> int:
    """The halo without the diagonal neighbours' corner pixels: rows and columns only."""
    own_rows, own_cols = len(halo_rows(size, grid, row, 1)), len(halo_rows(size, grid, col, 1))
    return ((len(halo_rows(size, grid, row, k)) - own_rows) * own_cols
            + (len(halo_rows(size, grid, col, k)) - own_cols) * own_rows)


def _every_side(size: int, grid: int, k: int) -> int:
    """The halo of a tile with neighbours on all four sides, whatever its place."""
    own = size // grid
    return (own + k - 1) ** 2 - own ** 2


K_MINUS_ONE = ("A 'same' convolution needs (k − 1)/2 rows and columns on each side, not k − 1: k − 1 is the total "
               "per dimension.", "'same' 卷积在每一侧需要 (k − 1)/2 行和列，而不是 k − 1：k − 1 是每个维度的总数。")
CORNERS = ("The diagonal neighbours send their corner pixels too.", "对角方向的邻居也要发送它们的角上的像素。")

number_exercise(
    "06.1", stated={"k": 3, "size": 96, "grid": 3}, rel=0,
    answer=lambda k, size, grid: halo_pixels(size, grid, 0, grid // 2, k),
    wrong=[(lambda k, size, grid: _every_side(size, grid, k),
            ("Above the top edge lies zero padding, which nobody sends: count only the sides with a neighbour.",
             "上边缘之外是零填充，没有人发送：只数有邻居的那几侧。")),
           (lambda k, size, grid: halo_pixels(size, grid, 0, grid // 2, 2 * k - 1), K_MINUS_ONE),
           (lambda k, size, grid: _no_corners(size, grid, 0, grid // 2, k), CORNERS)],
    hint=("A k×k 'same' convolution needs (k − 1)/2 rows and columns on each side, but only on the sides where there "
          "is a neighbour: beyond the image's edge lies zero padding. Count the window the tile reads, less the "
          "pixels it owns.",
          "k×k 的 'same' 卷积在每一侧需要 (k − 1)/2 行和列，但只在有邻居的那几侧：图像边缘之外是零填充。"
          "数出该图块读取的窗口，再减去它自己拥有的像素。"),
    explanation=("The tile owns {size}/{grid} rows and columns. It reads (k − 1)/2 = 1 more row below, and one more "
                 "column on each side, with the corner pixels of its two diagonal neighbours below: {answer} pixels. "
                 "Above it is zero padding.",
                 "该图块拥有 {size}/{grid} 行和列。它在下方多读 (k − 1)/2 = 1 行，左右各多读 1 列，"
                 "还有下方两个对角邻居的角上像素：共 {answer} 个像素。上方是零填充。"))

number_exercise(
    "06.2", stated={"k": 5, "size": 96, "grid": 4}, rel=0,
    answer=lambda k, size, grid: halo_pixels(size, grid, 1, 1, k),
    wrong=[(lambda k, size, grid: halo_pixels(size, grid, 1, 1, 2 * k - 1), K_MINUS_ONE),
           (lambda k, size, grid: _no_corners(size, grid, 1, 1, k), CORNERS),
           (lambda k, size, grid: (size // grid + (k - 1) // 2) ** 2 - (size // grid) ** 2,
            ("An interior tile needs a halo on both sides of each dimension, not one.",
             "内部图块在每个维度的两侧都需要光晕，而不只是一侧。"))],
    hint=("An interior tile has neighbours on all four sides and at the four corners; a k×k kernel needs (k − 1)/2 "
          "rows and columns on each side. Count the window the tile reads, less the pixels it owns.",
          "内部图块在四条边和四个角上都有邻居；k×k 卷积核在每一侧需要 (k − 1)/2 行和列。"
          "数出该图块读取的窗口，再减去它自己拥有的像素。"),
    explanation=("The tile owns {size}/{grid} rows and columns and reads k − 1 = 4 more in each dimension: {answer} "
                 "halo pixels, a large share of what it owns. With a coarser grid the same kernel's tiles would pay "
                 "far less per owned pixel: surface against volume.",
                 "该图块拥有 {size}/{grid} 行和列，每个维度多读 k − 1 = 4：共 {answer} 个光晕像素，占它自有像素的"
                 "很大一部分。网格越粗，同样的卷积核每个自有像素的代价越小：表面积对体积。"))


def tile_halo_rows(height, num_tiles, tile, kernel):
    """The input rows row tile ``tile`` needs for an odd k×k 'same' convolution, clipped to the image."""
    from nnpar_lite.util import even_bounds

    first, stop = even_bounds(height, num_tiles)[tile]      # the rows the tile owns
    halo = (kernel - 1) // 2                                 # on each side
    return list(range(max(first - halo, 0), min(stop + halo, height)))


ROW_CASES = [Case((f"height {h}, {n} tiles, tile {t}, {k}×{k} kernel", f"高 {h}，{n} 个图块，图块 {t}，{k}×{k} 卷积核"),
                  (h, n, t, k)) for h, n, t, k in
             [(11, 3, 0, 3), (11, 3, 1, 3), (11, 3, 2, 5), (10, 4, 1, 7), (10, 4, 3, 7), (7, 1, 0, 5),
              (9, 9, 4, 3), (12, 5, 4, 1), (100, 7, 3, 9), (13, 2, 1, 15)]]


NOT_CLIPPED = Probe(lambda expected, got, facts: min(got) < 0 or max(got) >= facts["args"][0],
                    ("Rows below 0 or from height on are beyond the image: zero padding, which nobody sends. Clip to "
                     "0 … height − 1.", "小于 0 或不小于 height 的行在图像之外：那是零填充，没有人发送。请裁剪到 0 … height − 1。"))


def check_tile_halo_rows(fn) -> bool:
    """Your ``fn(height, num_tiles, tile, kernel)`` must return the input rows the tile reads, checked
    against :func:`~nnpar_lite.spatial.halo_rows` on unseen cases: uneven tiles, one tile, a halo
    wider than a tile, a 1×1 kernel."""
    return written_without(fn, ("halo_rows",)) and \
        report(run_cases(fn, halo_rows, ROW_CASES), same=same_sequence, probes=(NOT_CLIPPED,))


register(Exercise("06.3", check_tile_halo_rows, solution=tile_halo_rows, hint=(
    "Cut the rows with even_bounds(height, num_tiles) (larger tiles first), widen the tile's rows by (k − 1)/2 on "
    "each side, and clip to 0 … height − 1.",
    "用 even_bounds(height, num_tiles) 切分各行（较大的图块在前），把图块的行向两侧各扩展 (k − 1)/2，"
    "并裁剪到 0 … height − 1。"), explanation=(
    "The same rows as nnpar_lite.spatial.halo_rows. Rows beyond the image are zero padding: each tile makes them "
    "itself, nobody sends them. A halo wider than the neighbouring tile reaches the tile after it.",
    "与 nnpar_lite.spatial.halo_rows 相同。图像之外的行是零填充：每个图块自己补零，没有人发送。"
    "光晕比相邻图块还宽时，会延伸到再下一个图块。")))
