"""The garbage collector in a long-running process: settled once the app is loaded, and
paused while a batch of many acyclic objects is built and used.

A gunicorn worker calls `settle_loaded_app` after loading (gunicorn.conf.py), and the
benchmark does the same so that it measures what production runs; the export reads and
writes each batch of records (app.exports.source.each_batch), and the analysis page reads
each chunk of cases, inside `collector_paused`.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def settle_loaded_app() -> None:
    """Move the loaded application (study definition, mappers, templates: some 270,000 objects)
    out of the collector's sight, so full collections stop walking it: about 125 ms on a small
    server, inside whichever request triggered it, and most of the save latency's 99th
    percentile. Objects made later are collected as usual."""
    gc.collect()
    gc.freeze()


_pause_lock = threading.Lock()
_pauses = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector off while a block builds many acyclic objects.

    Decoding a batch of 1,000 exported records makes some 30,000 dicts, lists and tuples;
    the collector would walk them again and again while they are made (a tenth of the
    export's time) although none is in a cycle: reference counting frees them. Pauses from
    several threads (export jobs run in threads) overlap safely: the collector comes back
    when the last one ends, and only if it was on when the first began.
    """
    global _pauses, _was_enabled
    with _pause_lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
