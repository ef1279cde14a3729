"""mmgenre.attention_views: one word's attention over the poster grid, scaled for display."""
from __future__ import annotations

import numpy as np
import pytest

from mmgenre.attention_views import min_max, word_region_map
from mmgenre.errors import InputError

CA = {"words": ["a", "hero", "falls"], "grid": (2, 3),
      "text_to_image_mean": np.array([[1, 1, 1, 1, 1, 1], [0, 2, 4, 6, 8, 10], [5, 0, 0, 0, 0, 0]], float)}


def test_word_region_map_is_the_row_on_the_grid_scaled_to_0_1():
    m = word_region_map(CA, 1)
    assert m.shape == (2, 3) and m.dtype == np.float32
    np.testing.assert_allclose(m, [[0, 0.2, 0.4], [0.6, 0.8, 1.0]], atol=1e-6)
    assert word_region_map(CA, 2)[0, 0] == 1.0 and word_region_map(CA, 2).sum() == 1.0


def test_flat_attention_shows_nothing():
    assert not word_region_map(CA, 0).any()
    assert min_max(np.array([])).size == 0


@pytest.mark.parametrize("bad", [-1, 3])
def test_out_of_range_word_is_an_input_error(bad):
    with pytest.raises(InputError, match="out of range"):
        word_region_map(CA, bad)


def test_row_that_does_not_fit_the_grid_is_an_input_error():
    with pytest.raises(InputError, match="regions"):
        word_region_map({**CA, "grid": (3, 3)}, 1)
