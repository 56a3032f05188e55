"""stack_common.heap: start-up objects leave the collector's generations (full collections were p99
stalls of 150-210 ms in search-service)."""
from __future__ import annotations

import gc

from stack_common.heap import freeze_startup_objects


def test_freeze_moves_live_objects_out_of_collection():
    try:
        keep = [[i] for i in range(1000)]          # tracked containers alive "at start-up"
        frozen = freeze_startup_objects()
        assert frozen >= 1000 and gc.get_freeze_count() == frozen
        tracked = {id(o) for o in gc.get_objects()}   # get_objects() skips the permanent generation
        assert not any(id(x) in tracked for x in keep)
    finally:
        gc.unfreeze()                              # leave the test process as it was
