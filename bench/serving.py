"""Form saves through the real web stack: gunicorn on loopback, 1, 4 and 16 concurrent clients.

Each client logs in like a browser (CSRF token, session cookie), then posts a new calcium
exposure form to its own records (no two clients touch the same record, so conflicts are
not what is measured) a fixed number of times. The baseline is as many threads doing bare
INSERT + commit on their own database connections. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select

from app.db import utcnow
from app.extensions import db
from app.records.models import Record
from bench.cases import SAVED_INSTRUMENT, exposure_form, stored_form, unlocked_record_ids
from bench.database import BENCH_PASSWORD, BENCH_USER, Raw, Seeded, bench_admin
from bench.measure import Stats

PROJECT = Path(__file__).resolve().parent.parent
CLIENT_LEVELS = (1, 4, 16)
#: Requests per client at each level: bounded loops of 100-400 saves. The 16-client level
#: makes 400, so its p99 is read from the 4th-slowest save rather than from 2 of 192.
REQUESTS_PER_CLIENT = {1: 100, 4: 40, 16: 25}
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf-token" content="([^"]+)"')


@dataclass(slots=True)
class Throughput:
    clients: int
    casebook_rps: float
    casebook: Stats
    errors: int
    baseline_rps: float
    baseline: Stats
    server_peak_rss_mib: float
    #: How busy all CPUs were while Casebook served the level (server, database and clients together).
    cpu_busy_pct: float

    def as_dict(self) -> dict[str, Any]:
        return {"clients": self.clients, "casebook_rps": self.casebook_rps, "casebook": self.casebook.as_dict(),
                "errors": self.errors, "baseline_rps": self.baseline_rps, "baseline": self.baseline.as_dict(),
                "server_peak_rss_mib": self.server_peak_rss_mib, "cpu_busy_pct": self.cpu_busy_pct,
                "ratio_rps": self.baseline_rps / self.casebook_rps}


def workers() -> int:
    """As `make serve`: 2 x CPUs + 1."""
    return 2 * (os.cpu_count() or 1) + 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def gunicorn(url: str, log: Path) -> Iterator[tuple[int, int]]:
    """Serve wsgi:app on a free loopback port; yield (port, master pid); stop it afterwards."""
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": url, "CASEBOOK_LOGIN_RATE_LIMIT": "10000 per minute",
           "WEB_CONCURRENCY": str(workers()), "CASEBOOK_BIND": f"127.0.0.1:{port}", "GUNICORN_ACCESS_LOG": "/dev/null"}
    # The production settings (`make serve`), on a free loopback port.
    command = [str(Path(sys.executable).with_name("gunicorn")), "--config", str(PROJECT / "gunicorn.conf.py"),
               "wsgi:app"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603
        try:
            _wait_until_up(port, process)
            yield port, process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def _wait_until_up(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("gunicorn exited at start-up; see its log")
        try:
            if _request(port, "GET", "/login", {}, None)[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer within 60 s")


def _request(port: int, method: str, path: str, cookies: dict[str, str], form: dict[str, str] | None
             ) -> tuple[int, str, list[str]]:
    """One request on a new connection (gunicorn's sync workers close it after each response)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}
        body = None
        if form is not None:
            body = urlencode(form, doseq=True)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        return response.status, text, response.headers.get_all("Set-Cookie") or []
    finally:
        connection.close()


class Client:
    """A logged-in browser: its cookies and a CSRF token."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.token = ""

    def send(self, method: str, path: str, form: dict[str, Any] | None = None, *,
             keep_cookies: bool = True) -> tuple[int, str]:
        status, text, set_cookies = _request(self.port, method, path, self.cookies, form)
        for header in set_cookies if keep_cookies else ():
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        match = CSRF.search(text)
        if match:
            self.token = match.group(1) or match.group(2)
        return status, text

    def save(self, label: str, fields: dict[str, Any]) -> int:
        """Post a new instance of the benchmark form to record `label`; the status (302 = saved).

        A browser follows the redirect, and the page it lands on shows and removes the
        "saved" message the save put in the session cookie. The client does not fetch that
        page (only the save is measured), so it keeps the cookie it had: otherwise every
        save would add a message and the cookie would grow without end, which no browser
        session does.
        """
        path = f"/records/{label}/{SAVED_INSTRUMENT}/new"
        return self.send("POST", path, {**fields, "csrf_token": self.token}, keep_cookies=False)[0]

    def log_in(self, form_path: str) -> None:
        self.send("GET", "/login")
        status, _ = self.send("POST", "/login", {"username": BENCH_USER, "password": BENCH_PASSWORD,
                                                "csrf_token": self.token})
        if status != 302:
            raise RuntimeError(f"benchmark log-in answered {status}")
        if self.send("GET", form_path)[0] != 200:
            raise RuntimeError(f"GET {form_path} failed")


def _run_threads(count: int, work: Any) -> float:
    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _peak_rss_mib(master: int) -> float:
    """The largest peak resident size (VmHWM) among gunicorn's worker processes."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    peaks = []
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks, default=0.0)


def concurrent_saves(seeded: Seeded, raw: Raw, log: Path) -> list[Throughput]:
    """Saves per second and latency at each client level, next to raw INSERTs with as many threads.

    Runs in the app context of `seeded` (to pick records); the server is a separate process.
    """
    form = exposure_form(seed=2)
    fields = {**form.values, "form_status": str(form.status), "version": "0"}
    warmup = 3 * workers()
    record_ids = unlocked_record_ids(warmup + sum(level * REQUESTS_PER_CLIENT[level] for level in CLIENT_LEVELS))
    labels = {record_id: label for record_id, label in
              db.session.execute(select(Record.id, Record.label).where(Record.id.in_(record_ids)))}
    data, missing = stored_form(form)
    admin_id = bench_admin().id
    db.session.remove()
    results = []
    with gunicorn(seeded.target.url, log) as (port, master):
        clients = [Client(port) for _ in range(max(CLIENT_LEVELS))]
        for client, record_id in zip(clients, record_ids, strict=False):
            client.log_in(f"/records/{labels[record_id]}/{SAVED_INSTRUMENT}/new")
        # Unmeasured saves first, so every worker has compiled its statements and templates.
        for n, record_id in enumerate(record_ids[:warmup]):
            clients[n % len(clients)].save(labels[record_id], fields)
        cursor_at = warmup
        for level in CLIENT_LEVELS:
            requests = REQUESTS_PER_CLIENT[level]
            slices = [record_ids[cursor_at + n * requests: cursor_at + (n + 1) * requests] for n in range(level)]
            cursor_at += level * requests
            latencies: list[float] = []
            errors = [0]
            lock = threading.Lock()

            def save(n: int, slices: list[list[int]] = slices, latencies: list[float] = latencies,
                     errors: list[int] = errors, lock: threading.Lock = lock) -> None:
                client = clients[n]
                for record_id in slices[n]:
                    started = time.perf_counter()
                    status = client.save(labels[record_id], fields)
                    elapsed = time.perf_counter() - started
                    with lock:
                        latencies.append(elapsed)
                        if status != 302:
                            errors[0] += 1

            busy_before, total_before = _cpu_times()
            wall = _run_threads(level, save)
            busy_after, total_after = _cpu_times()
            busy = 100 * (busy_after - busy_before) / max(1, total_after - total_before)
            ok = len(latencies) - errors[0]
            raw_rps, raw_stats = _raw_inserts(raw, level, requests, slices, data, missing, form.status, admin_id)
            results.append(Throughput(level, ok / wall, Stats.of(latencies), errors[0], raw_rps, raw_stats,
                                      _peak_rss_mib(master), busy))
    return results


def _raw_inserts(raw: Raw, level: int, requests: int, slices: list[list[int]], data: dict[str, Any],
                 missing: dict[str, str], status: int, admin_id: int) -> tuple[float, Stats]:
    """`level` threads, each on its own connection, INSERT + commit `requests` rows of the same form."""
    insert = raw.sql("INSERT INTO form_instance (record_id, instrument, instance, data, missing, status, version, "
                     "updated_at, updated_by_id) VALUES (?, ?, ?, ?j, ?j, ?, 1, ?, ?)")
    latencies: list[float] = []
    lock = threading.Lock()
    payload = (json.dumps(data), json.dumps(missing))

    def work(n: int) -> None:
        with raw.connection() as connection:
            cursor = connection.cursor()
            for number, record_id in enumerate(slices[n]):
                started = time.perf_counter()
                cursor.execute(insert, (record_id, SAVED_INSTRUMENT, 5000 + level * 100 + number, *payload, status,
                                        raw.timestamp(utcnow()), admin_id))
                connection.commit()
                with lock:
                    latencies.append(time.perf_counter() - started)

    wall = _run_threads(level, work)
    return level * requests / wall, Stats.of(latencies)
