"""train.benchmarks.memory: the sampler sees an allocation made inside its block."""
from __future__ import annotations

import numpy as np
import pytest

from train.benchmarks.memory import PeakMemory


@pytest.mark.skipif(not PeakMemory.available(), reason="needs /proc/self/status (Linux)")
def test_peak_anonymous_memory_sees_a_200_mb_array():
    with PeakMemory(interval=0.01) as before:
        pass
    with PeakMemory(interval=0.01) as peak:
        block = np.ones(200 * 2**20, dtype=np.uint8)  # touched: resident, anonymous
    del block  # alive at the block's end: its last sample sees it whatever the timing
    assert peak.anon_mb >= before.anon_mb + 150
    assert peak.rss_mb >= peak.anon_mb and peak.file_mb > 0
