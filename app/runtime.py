"""The garbage collector's settings for a long-running process once the app is loaded.

A gunicorn worker calls `settle_loaded_app` after loading (gunicorn.conf.py), and the
benchmark does the same so that it measures what production runs.
"""

from __future__ import annotations

import gc


def settle_loaded_app() -> None:
    """Move the loaded application (study definition, mappers, templates: some 270,000 objects)
    out of the collector's sight, so full collections stop walking it: about 125 ms on a small
    server, inside whichever request triggered it, and most of the save latency's 99th
    percentile. Objects made later are collected as usual."""
    gc.collect()
    gc.freeze()
