"""LazyRows: a table's sequence features read per batch from the memory-mapped cache."""
from __future__ import annotations

import numpy as np

from mmgenre.batching import FeatureTable
from mmgenre.lazy_rows import LazyRows


def _mapped(tmp_path, shape=(10, 6, 3)):
    full = np.arange(np.prod(shape), dtype=np.float16).reshape(shape)
    np.save(tmp_path / "seq.npy", full)
    return full, np.load(tmp_path / "seq.npy", mmap_mode="r")


def test_lazy_rows_index_like_the_materialised_array(tmp_path):
    full, mapped = _mapped(tmp_path)
    rows = np.array([7, 2, 9, 2, 0])
    view = LazyRows(mapped, rows, columns=4)
    expected = full[rows, :4]
    assert view.shape == expected.shape and len(view) == 5 and view.dtype == np.float16
    np.testing.assert_array_equal(view[np.array([3, 0, 4])], expected[[3, 0, 4]])  # unsorted asks
    np.testing.assert_array_equal(view[1:4], expected[1:4])
    np.testing.assert_array_equal(view[2], expected[2])
    np.testing.assert_array_equal(np.asarray(view), expected)
    assert not isinstance(view[1:3], np.memmap)  # a copy: nothing keeps the file's pages
    sub = view.take(np.array([4, 1]))
    np.testing.assert_array_equal(sub[slice(None)], expected[[4, 1]])
    assert LazyRows(mapped, rows).shape == (5, 6, 3)  # no column limit


def test_feature_table_batches_and_subsets_lazy_and_plain_arrays_alike(tmp_path):
    full, mapped = _mapped(tmp_path)
    rows = np.array([5, 3, 8, 1])
    pooled = np.arange(40, dtype=np.float16).reshape(10, 4)
    lazy = FeatureTable(list("abcd"), {"text": pooled[rows], "text_tokens": LazyRows(mapped, rows, 5)})
    plain = FeatureTable(list("abcd"), {"text": pooled[rows], "text_tokens": full[rows, :5]})
    for idx in (np.array([0, 2]), slice(1, 4), None):
        a, b = lazy.batch(idx), plain.batch(idx)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    sub_lazy, sub_plain = lazy.subset(np.array([3, 0])), plain.subset(np.array([3, 0]))
    assert isinstance(sub_lazy.arrays["text_tokens"], LazyRows) and sub_lazy.ids == ["d", "a"]
    np.testing.assert_array_equal(sub_lazy.batch()["text_tokens"].numpy(), sub_plain.batch()["text_tokens"].numpy())
    assert lazy.dims == {"text": 4}
