"""Fixtures of the real-browser tests, loaded with `pytest_plugins` by tests/test_browser*.py:
one Chromium per module, a live server per test on that test's demo database, and pages in
separate browser contexts (separate cookie jars: two users at once), each with axe-core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.browser_support import AXE, CHROMIUM_ARGS, DESKTOP, chromium_path, live_server


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.fail("Debian's chromium is not installed: `make test` installs it (make browser-deps)")
    if not AXE.is_file():
        pytest.fail(f"axe-core is not installed at {AXE}: run `make browser-deps`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def start_server(demo: Flask, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """`start_server(**config)`: a live server on this test's demo database; returns its URL."""
    from tests.conftest import make_app

    with ExitStack() as stack:
        def start(**config: Any) -> str:
            app = make_app(demo.config["SQLALCHEMY_DATABASE_URI"], WTF_CSRF_ENABLED=True,
                           EXPORT_JOBS_DIR=str(tmp_path / "export-jobs"), **config)
            return stack.enter_context(live_server(app))

        yield start


@pytest.fixture
def new_page(chromium: Any, start_server: Callable[..., str]) -> Iterator[Callable[..., Any]]:
    """`new_page(base_url=None, viewport=DESKTOP)`: a page in a fresh context (its own log-in)."""
    contexts: list[Any] = []
    default: list[str] = []

    def make(base_url: str | None = None, viewport: dict[str, int] | None = None, **options: Any) -> Any:
        if base_url is None:
            if not default:
                default.append(start_server())
            base_url = default[0]
        context = chromium.new_context(base_url=base_url, viewport=viewport or DESKTOP, **options)
        context.add_init_script(path=str(AXE))
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15000)
        return page

    yield make
    for context in contexts:
        context.close()
