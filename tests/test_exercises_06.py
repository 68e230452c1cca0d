"""Chapter 06's exercise checks, proven: the solution passes, typical wrong answers fail."""

import pytest

from nnpar_lite.util import even_bounds


def k_minus_one_per_side(height, num_tiles, tile, kernel):
    """Reads the halo as k − 1 rows on each side (the slip the chapter corrects)."""
    first, stop = even_bounds(height, num_tiles)[tile]
    return list(range(max(first - (kernel - 1), 0), min(stop + kernel - 1, height)))


def not_clipped(height, num_tiles, tile, kernel):
    """Forgets that beyond the image's edge there is nothing to receive."""
    first, stop = even_bounds(height, num_tiles)[tile]
    return list(range(first - (kernel - 1) // 2, stop + (kernel - 1) // 2))


def floor_cut(height, num_tiles, tile, kernel):
    """Cuts the tiles at ⌊t · height / n⌋: the larger tiles come last, not first."""
    first, stop = tile * height // num_tiles, (tile + 1) * height // num_tiles
    halo = (kernel - 1) // 2
    return list(range(max(first - halo, 0), min(stop + halo, height)))


def calls_halo_rows(height, num_tiles, tile, kernel):
    """The package's function asked for the answer."""
    from nnpar_lite.spatial import halo_rows
    return halo_rows(height, num_tiles, tile, kernel)


WRONG_ANSWERS = {
    "06.1": [(132, "zero padding"), (200, "(k − 1)/2"), (96, "corner pixels"), (65, "is not it")],
    "06.2": [(448, "(k − 1)/2"), (192, "corner pixels"), (100, "both sides")],
    "06.3": [(k_minus_one_per_side, "expected ["), (not_clipped, "Clip to 0"), (floor_cut, "expected ["),
             (calls_halo_rows, "uses halo_rows")],
}

