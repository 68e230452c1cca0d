"""Chapter 06: a convolution computed tile by tile, and with the image's rows split among real
processes exchanging halos, equals one ``F.conv2d`` (float64, 1e-10); the halo is (k − 1)/2 rows
and columns on each side."""

import pytest
import torch
import torch.nn.functional as F

from nnpar_lite import spatial
from nnpar_lite.distributed import launch
from nnpar_lite.experiments import spatial as spx

TOL = 1e-10


def largest(a, b):
    return max(float((x - y).detach().abs().max()) for x, y in zip(a, b))


@pytest.mark.parametrize("height, width, kernel, padding, grid", [
    (11, 9, 3, 1, (2, 2)), (10, 7, 5, 0, (3, 2)), (13, 6, 4, 1, (3, 1)), (8, 8, 3, 2, (4, 3)), (5, 5, 1, 0, (5, 5)),
    (7, 12, 2, 0, (2, 5)),
])
def test_spatial_conv2d_equals_conv2d_forward_and_backward(height, width, kernel, padding, grid):
    g = torch.Generator().manual_seed(height * width)
    x = torch.randn(2, 3, height, width, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(4, 3, kernel, kernel, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, generator=g, requires_grad=True)
    tiled, full = spatial.spatial_conv2d(x, w, b, grid=grid, padding=padding), F.conv2d(x, w, b, padding=padding)
    assert largest([tiled], [full]) < TOL
    assert largest(torch.autograd.grad(tiled.square().sum(), (x, w, b)),
                   torch.autograd.grad(full.square().sum(), (x, w, b))) < TOL


@pytest.mark.parametrize("kwargs, word", [(dict(grid=(0, 1)), "grid rows"), (dict(grid=(2, 99)), "grid cols"),
                                          (dict(padding=-1), "padding")])
def test_spatial_conv2d_bad_input(kwargs, word):
    with pytest.raises(ValueError, match=word):
        spatial.spatial_conv2d(torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 3, 3), **kwargs)
    with pytest.raises(ValueError, match="channels"):
        spatial.spatial_conv2d(torch.zeros(1, 2, 6, 6), torch.zeros(1, 1, 3, 3))


@pytest.mark.parametrize("kernel, per_side", [(1, 0), (3, 1), (5, 2), (7, 3), (9, 4), (15, 7)])
def test_the_halo_is_k_minus_1_over_2_on_each_side(kernel, per_side):
    """An interior tile of a 'same' convolution reads (k − 1)/2 rows and columns beyond its own on
    every side: k − 1 per dimension in all, not k − 1 per side."""
    assert spatial.halo_width(kernel) == per_side
    x, w = torch.zeros(1, 1, 30, 30), torch.zeros(1, 1, kernel, kernel)
    middle = spatial.tiles(x, w, grid=(3, 3), padding=kernel // 2)[4]
    for own, window in (("out_rows", "in_rows"), ("out_cols", "in_cols")):
        (o0, o1), (w0, w1) = middle[own], middle[window]
        w0, w1 = w0 - kernel // 2, w1 - kernel // 2                        # padded → image coordinates
        assert (o0 - w0, w1 - o1) == (per_side, per_side)
        assert (w1 - w0) - (o1 - o0) == kernel - 1
    assert list(spatial.halo_rows(30, 3, 1, kernel)) == list(range(10 - per_side, 20 + per_side))


def test_halo_rows_are_clipped_at_the_image_and_cut_as_even_bounds():
    assert spatial.halo_rows(11, 3, 0, 3) == range(0, 5)        # tiles own rows 0–3, 4–7, 8–10
    assert spatial.halo_rows(11, 3, 2, 5) == range(6, 11)
    assert spatial.halo_rows(10, 4, 1, 7) == range(0, 9)        # a halo wider than the tile above it
    assert spatial.halo_rows(7, 1, 0, 5) == range(0, 7)


@pytest.mark.parametrize("args, word", [((10, 3, 0, 4), "odd"), ((10, 3, 3, 3), "tile must be"),
                                        ((2, 3, 0, 3), "cannot cut"), ((10, 0, 0, 3), "num_tiles")])
def test_halo_rows_bad_input(args, word):
    with pytest.raises(ValueError, match=word):
        spatial.halo_rows(*args)


def test_halo_grows_with_the_grid():
    shares = [spatial.halo_fraction(64, 64, (g, g), 3)["halo / own"] for g in (1, 2, 4, 8)]
    assert shares[0] == 0 and all(a < b for a, b in zip(shares, shares[1:]))
    assert spatial.halo_fraction(64, 64, (2, 2), 3)["halo pixels"] == 4 * 65


def test_the_chapter_check_passes_and_fails_when_the_border_is_wrong(monkeypatch):
    rows = spx.verify_tiles_against_conv2d()
    assert len(rows) == len(spx.CASES) and all(ok for _, ok in rows)
    real_pad = F.pad
    monkeypatch.setattr(spatial.F, "pad", lambda x, pad: real_pad(x, pad, value=1.0))   # ones beyond the edge
    verdicts = [ok for _, ok in spx.verify_tiles_against_conv2d()]
    assert verdicts == [padding == 0 for _, _, _, padding, _ in spx.CASES]


@pytest.mark.parametrize("world_size, shape", [(2, (2, 3, 4, 11, 9, 3)), (3, (1, 2, 2, 10, 7, 5))])
def test_real_halo_exchange_equals_conv2d(world_size, shape):
    for r in launch(spx.halo_conv_worker, world_size, dict(shape=shape), backend="gloo", timeout=60):
        assert max(v for k, v in r.items() if "gradient" in k or k == "output") < TOL


def test_the_halo_is_drawn_in_its_own_colour():
    """The figure shades the highlighted tile and its halo in two colours (an RGBA layer over the
    photograph), and its legend names both."""
    import matplotlib
    import numpy as np

    from nnpar_lite.widgets import spatial as spw

    matplotlib.use("Agg")
    fig, _ = spw.halo_figure((2, 3), 5, 4)
    layers = [np.asarray(im.get_array()) for im in fig.axes[0].images if np.asarray(im.get_array()).ndim == 3]
    colours = {tuple(np.round(px[:3], 2)) for layer in layers for px in layer.reshape(-1, layer.shape[-1])
               if px[3] > 0}
    assert {tuple(np.round(spw.TILE_COLOUR, 2)), tuple(np.round(spw.HALO_COLOUR, 2))} <= colours
    assert spw.TILE_COLOUR != spw.HALO_COLOUR
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert any("tile 4" in t for t in labels) and any("halo" in t for t in labels)
