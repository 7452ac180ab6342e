"""Attribution map figures: each map is drawn centred on its own mean."""
import numpy as np
import torch

from xaibench.figures import attribution_maps


def _drawn_map(figure, n_images, row, column):
    ax = figure.axes[row * n_images + column]
    return np.asarray(ax.get_images()[-1].get_array())


def test_maps_are_drawn_centred_per_image_so_a_common_offset_does_not_hide_the_pattern():
    images = torch.zeros(2, 1, 4, 4)
    phi = torch.full((2, 4, 4), 5.0)  # a large common offset ...
    phi[0, 1, 2] = 6.0  # ... and one patch above it
    phi[1, 3, 0] = 4.0  # ... and one patch below it
    figure = attribution_maps(images, {"OFA": phi})
    for column in range(2):
        drawn = _drawn_map(figure, 2, 1, column)
        assert abs(drawn.mean()) < 1e-6
        assert drawn.max() - drawn.min() == 1.0
    assert _drawn_map(figure, 2, 1, 0)[1, 2] > 0 and _drawn_map(figure, 2, 1, 1)[3, 0] < 0
    raw = attribution_maps(images, {"OFA": phi}, centre=False)
    assert np.allclose(_drawn_map(raw, 2, 1, 0), phi[0].numpy())
