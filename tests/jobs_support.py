"""Helpers for the tests of background jobs (app/jobs): start one from a page, wait for its end."""

from __future__ import annotations

import time
from typing import Any


def job_id(response: Any) -> str:
    """The id of the job a start request redirected to (303 to its progress page)."""
    assert response.status_code == 303, (response.status_code, response.get_data(as_text=True)[:2000])
    return response.headers["Location"].rsplit("/", 1)[-1]


def finished(client: Any, state_url: str) -> dict[str, Any]:
    """Poll the job's state until it has finished; return the last state."""
    for _ in range(600):  # a bound, not a timing assertion: the jobs of the tests take about a second
        state = client.get(state_url).get_json()
        if state["finished"]:
            return state
        time.sleep(0.1)
    raise AssertionError(f"the job at {state_url} never finished")
