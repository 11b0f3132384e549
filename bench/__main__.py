"""`python -m bench` (`make bench`): seed each size, measure, write bench/results/*.json and BENCHMARKS.md.

Options come from the command line or the environment, so `make bench` takes them too:

    BENCH_SIZES=1000,10000,100000   record counts (default 1000,10000: about ten minutes here)
    BENCH_DATABASES=sqlite,postgresql   default: sqlite, plus postgresql when DATABASE_URL is one
    BENCH_ONLY=grid_vs_sql,api_export_vs_sql,serving   only these benchmarks (functions of bench/cases.py,
                                        and `serving` for gunicorn): e.g. for a 100,000-record run
    DATABASE_URL=postgresql+psycopg://user:pass@127.0.0.1/casebook_bench   (name must contain "bench")
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("SECRET_KEY", "casebook-benchmark-secret-key-not-for-production")
os.environ.setdefault("CASEBOOK_PSEUDONYM_KEY", "casebook-benchmark-pseudonym-key-not-for-production")

import gunicorn
import sqlalchemy
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from bench import cases, report, serving
from bench.database import BenchSetupError, Raw, Seeded, Target, seed, targets

PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_SIZES = "1000,10000"
HEADER = "# Benchmarks\n"

Benchmarks = list[tuple[Callable[..., cases.Result], int, dict[str, Any]]]
#: (benchmark, timed iterations): cheap operations often enough for a p99, exports a few times.
IN_PROCESS: Benchmarks = [
    (cases.save_form_vs_insert, 200, {}),
    (cases.grid_vs_sql, 100, {"last_page": False}),
    (cases.grid_vs_sql, 50, {"last_page": True}),
    (cases.record_page_vs_sql, 100, {}),
    (cases.dashboard_vs_sql, 30, {}),
    *((cases.study_dashboard_vs_sql, 10, {"state": state}) for state in cases.DASHBOARD_STATES),
    *((cases.site_dashboard_vs_sql, 10, {"state": state}) for state in cases.DASHBOARD_STATES),
    *((cases.analysis_vs_sql, 5, {"state": state}) for state in cases.DASHBOARD_STATES),
    (cases.api_export_vs_sql, 3, {}),
    (cases.export_csv_vs_read_sql, 3, {}),
    (cases.export_vs_read_sql, 1, {}),
]
#: After the concurrent saves: an import adds thousands of records, and PostgreSQL would still be
#: writing them out (checkpoint) while the gunicorn benchmark measures latency.
WRITES_LAST: Benchmarks = [
    (cases.api_import_vs_insert, 1, {}),
]


def machine(target: Target) -> dict[str, str]:
    meminfo = Path("/proc/meminfo").read_text().splitlines() if Path("/proc/meminfo").exists() else []
    total_kib = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:")), 0)
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    info = {
        "CPU": f"{model}, {os.cpu_count()} CPUs (nproc)",
        "memory": f"{total_kib / 1024 / 1024:,.1f} GiB",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "SQLAlchemy": sqlalchemy.__version__,
        "gunicorn": f"{gunicorn.__version__} ({serving.workers()} sync workers = 2 \u00d7 CPUs + 1)",
    }
    if target.kind == "postgresql":
        info["PostgreSQL"] = server_version(target)
    return info


def server_version(target: Target) -> str:
    if target.kind == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    engine = create_engine(target.url, poolclass=NullPool)
    with engine.connect() as connection:
        version = str(connection.execute(text("SHOW server_version")).scalar_one())
    engine.dispose()
    return f"PostgreSQL {version}"


def run_size(target: Target, size: int, workdir: Path, only: set[str]) -> dict[str, Any]:
    print(f"[{target.label} {size:,}] seeding", flush=True)
    seeded = seed(target, size)
    print(f"[{target.label} {size:,}] seeded in {seeded.seconds:.1f} s", flush=True)
    result: dict[str, Any] = {
        "ran_at": datetime.now(UTC).isoformat(timespec="seconds"),
        # Other work on the machine skews every number; the load says how much there was.
        "load_average": os.getloadavg()[0],
        "seed": {"seconds": seeded.seconds, "form_rows": seeded.form_rows, "audit_rows": seeded.audit_rows},
        "latency": [], "throughput": [], "skipped": [],
    }
    raw = Raw(target)
    try:
        with seeded.app.app_context():
            result["latency"] += _in_process(IN_PROCESS, seeded, raw, only)
            levels = [] if only and "serving" not in only else \
                serving.concurrent_saves(seeded, raw, workdir / f"gunicorn-{target.kind}-{size}.log")
            for level in levels:
                result["throughput"].append(level.as_dict())
                print(f"[{target.label} {size:,}] {level.clients} clients: {level.casebook_rps:.0f} saves/s, "
                      f"p99 {level.casebook.p99_ms:.0f} ms; raw {level.baseline_rps:.0f}/s", flush=True)
            result["latency"] += _in_process(WRITES_LAST, seeded, raw, only)
    finally:
        raw.dispose()
    return result


def _in_process(benchmarks: Benchmarks, seeded: Seeded, raw: Raw, only: set[str]) -> list[dict[str, Any]]:
    measured = []
    label = f"[{seeded.target.label} {seeded.records:,}]"
    for benchmark, iterations, options in benchmarks:
        if only and benchmark.__name__ not in only:
            continue
        started = time.perf_counter()
        outcome = benchmark(seeded, raw, iterations, **options)
        measured.append(outcome.as_dict())
        print(f"{label} {outcome.name}: {outcome.casebook.p50_ms:.1f} ms vs {outcome.baseline.p50_ms:.1f} ms "
              f"({outcome.ratio:.1f}x) in {time.perf_counter() - started:.0f} s", flush=True)
    return measured


def merged(previous: dict[str, Any] | None, fresh: dict[str, Any], only: set[str]) -> dict[str, Any]:
    """A partial run (`only`) replaces what it measured and keeps the size's other results."""
    if not only or not previous:
        return fresh
    names = {r["name"] for r in fresh["latency"]}
    fresh["latency"] = [r for r in previous.get("latency", []) if r["name"] not in names] + fresh["latency"]
    if "serving" not in only:
        fresh["throughput"] = previous.get("throughput", [])
    return fresh


def run_target(target: Target, sizes: list[int], workdir: Path, only: set[str]) -> None:
    document = report.load(target.kind)
    document.update({"database": target.label, "server": server_version(target), "machine": machine(target),
                     "ran_at": datetime.now(UTC).isoformat(timespec="seconds")})
    document.setdefault("sizes", {})
    for size in sizes:
        document["sizes"][str(size)] = merged(document["sizes"].get(str(size)), run_size(target, size, workdir, only),
                                              only)
        report.save(target.kind, document)  # after each size, so a long run keeps what it measured


def main(argv: list[str] | None = None) -> int:
    default_databases = "sqlite" + (",postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgresql")
                                    else "")
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", DEFAULT_SIZES),
                        help="comma-separated record counts")
    parser.add_argument("--databases", default=os.environ.get("BENCH_DATABASES", default_databases))
    parser.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""),
                        help="comma-separated benchmark names (default: all)")
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    sizes = [int(size.replace("_", "")) for size in args.sizes.split(",") if size.strip()]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="casebook-bench-") as tmp:
        try:
            chosen = targets(args.databases, os.environ.get("DATABASE_URL", ""), Path(tmp))
        except BenchSetupError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 2
        for target in chosen:
            run_target(target, sizes, Path(tmp), only)
    report.write_markdown(PROJECT / "BENCHMARKS.md", HEADER)
    print(f"BENCHMARKS.md updated ({time.perf_counter() - started:.0f} s).")
    return 0


if __name__ == "__main__":  # the guard also keeps spawned seeding workers from re-running the suite
    sys.exit(main())
