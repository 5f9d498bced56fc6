"""The ``run`` command's collector settings (bridge.service.tune_garbage_collector), in a
process of their own: they change the interpreter's global state, which a test process shares
with every other test."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.support.process import child_env

# Old cyclic garbage is freed once enough young collections have passed: with CPython's
# defaults about 85,000 allocations here, with the bridge's settings about 840,000. The bound
# fails a setting that would keep such garbage for much longer.
ALLOCATION_BOUND = 3_000_000

PROBE = textwrap.dedent(
    f"""
    import collections, gc, json, weakref
    from bridge.service import (
        FULL_COLLECTION_EVERY, YOUNG_COLLECTION_EVERY, tune_garbage_collector
    )

    defaults = gc.get_threshold()
    tune_garbage_collector()

    class Node:
        pass

    def cycle():
        node = Node()
        node.itself = node
        return node

    old = cycle()
    freed = weakref.ref(old)
    gc.collect(1)  # into the oldest generation, where only a full collection looks
    del old
    recent = collections.deque(maxlen=20_000)  # some survive young collections, as in a service
    allocations = 0
    while freed() is not None and allocations < {ALLOCATION_BOUND}:
        recent.append(cycle())
        allocations += 1
    print(json.dumps({{
        "defaults": defaults,
        "tuned": gc.get_threshold(),
        "every": [YOUNG_COLLECTION_EVERY, FULL_COLLECTION_EVERY],
        "frozen": gc.get_freeze_count(),
        "freed": freed() is None,
        "allocations": allocations,
    }}))
    """
)


def test_tuned_collector_freezes_start_up_and_still_frees_old_cycles() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    # Young collections rarer; generation 1 as CPython has it; full ones rarer still.
    young, middle, full = found["tuned"]
    assert [young, full] == found["every"]
    assert young > found["defaults"][0] and middle == found["defaults"][1]
    assert young * middle * full >= 10 * (found["defaults"][0] * found["defaults"][1] * 10)
    assert found["frozen"] > 10_000  # the imported modules are out of the collector's sight
    assert found["freed"], f"old cyclic garbage alive after {found['allocations']} allocations"
