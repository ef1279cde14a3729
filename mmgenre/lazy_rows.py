"""Rows of a (memory-mapped) array, gathered only when a batch asks for them.

A training table of sequence features is the largest thing a run holds: at the full MM-IMDb size
the plot tokens and poster regions of every movie are ~8 GB as float16. :class:`LazyRows` keeps a
reference to the cache's memory-mapped array and the table's row numbers instead, so a batch
reads its own rows from the file (the OS page cache holds what is hot, and can drop it).
"""
from __future__ import annotations

import numpy as np


class LazyRows:
    """``array[rows][:, :columns]`` without the copy: indexing returns a numpy array of those rows.

    ``view[idx]`` (an int array or a slice over the view's rows) -> ndarray; ``view.take(rows)`` ->
    another LazyRows over a subset; ``shape`` / ``dtype`` / ``len`` as the materialised array's.
    """

    def __init__(self, array: np.ndarray, rows: np.ndarray, columns: int | None = None) -> None:
        self.array = array
        self.rows = np.asarray(rows, dtype=np.int64)
        self.columns = columns

    @property
    def shape(self) -> tuple[int, ...]:
        rest = list(self.array.shape[1:])
        if self.columns is not None and rest:
            rest[0] = min(rest[0], self.columns)
        return (len(self.rows), *rest)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx) -> np.ndarray:
        picked = self.rows[idx]
        if np.ndim(picked) == 0:
            picked = picked.reshape(1)
            out = self._gather(picked)[0]
        else:
            out = self._gather(picked)
        return out

    def _gather(self, picked: np.ndarray) -> np.ndarray:
        # Sorted reads walk the file forwards; the rows go back into the asked order after.
        order = np.argsort(picked, kind="stable")
        sorted_rows = picked[order]
        part = self.array[sorted_rows] if self.columns is None else self.array[sorted_rows, :self.columns]
        out = np.empty_like(part)
        out[order] = part
        return out

    def take(self, rows: np.ndarray) -> "LazyRows":
        return LazyRows(self.array, self.rows[np.asarray(rows, dtype=np.int64)], self.columns)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[slice(None)]
        return out if dtype is None else out.astype(dtype)
