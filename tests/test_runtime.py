"""The collector pause used while export batches are built: it must always give the collector back."""

from __future__ import annotations

import gc
import threading

import pytest

from app.runtime import collector_paused


@pytest.fixture(autouse=True)
def _collector_on():
    gc.enable()
    yield
    gc.enable()


def test_pause_holds_the_collector_off_and_gives_it_back() -> None:
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_pause_gives_the_collector_back_after_an_error() -> None:
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("bad batch")
    assert gc.isenabled()


def test_pause_leaves_a_collector_that_was_off_off() -> None:
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_overlapping_pauses_from_two_threads_end_with_the_last() -> None:
    """An export job's thread and a request's thread pausing at once: the first to finish
    must not turn the collector back on under the other, nor leave it off after both."""
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def first() -> None:
        with collector_paused():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with collector_paused():
            second_in.set()
            first_out.wait(5)
            seen["after first left"] = gc.isenabled()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == {"after first left": False}
    assert gc.isenabled()
