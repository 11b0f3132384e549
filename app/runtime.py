"""The garbage collector's settings for a long-running process once the app is loaded.

A gunicorn worker calls `settle_loaded_app` after loading (gunicorn.conf.py), and the
benchmark does the same so that it measures what production runs.
"""

from __future__ import annotations

import gc

#: Net new container objects before a young-generation collection (CPython's default is 700).
#: An export batch or an API page makes tens of thousands of short-lived dicts and tuples that
#: reference counting frees; at 700 the collector ran some 200 times per 10,000 exported
#: records, walking live batches again and again, a tenth of the export's time. 10,000 young
#: objects are still a few megabytes at most.
YOUNG_GENERATION = 10_000


def settle_loaded_app() -> None:
    """Move the loaded application (study definition, mappers, templates: some 270,000 objects)
    out of the collector's sight, so full collections stop walking it (about 125 ms on a small
    server, inside whichever request triggered it: most of the save latency's 99th percentile),
    and collect the young generation less often. Objects made later are collected as usual."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, middle, old)
