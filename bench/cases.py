"""In-process benchmarks: Casebook's service or page next to the raw SQL that gets the same data.

Pages are requested through Flask's test client (the whole request: log-in check, access
scoping, queries, template), so the numbers are server time without the network; the
gunicorn benchmark (`serving`) adds the network and concurrency.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from flask.testing import FlaskClient
from sqlalchemy import event, select

from app.auth.models import User
from app.dashboard.services import forget_remembered, site_summaries
from app.db import utcnow
from app.exports.formats import CsvWriter
from app.exports.services import COMMAND_LINE, ExportJob, get_profile, resolve_scope
from app.exports.source import SourceRecord, each_batch
from app.extensions import db
from app.records.models import Record
from app.records.repository import RecordRepository
from app.records.services import Actor, Submission, save_form
from app.study import current_study
from app.synthetic.bulk import CaseBuilder, Person, SiteRef, Team
from app.synthetic.generator import CaseGenerator, CaseSpec, FormSpec
from bench.database import BENCH_PASSWORD, BENCH_USER, SITES, Raw, Seeded, bench_admin
from bench.measure import EXTRA_RUNS, Stats, compare

PAGE_SIZE = 50
SITE = "SYN001"
#: The form every save benchmark writes: a new calcium exposure instance (repeatable, so the
#: same record can take many), with the values a generated case would have.
SAVED_INSTRUMENT = "calcium_exposure"


@dataclass(slots=True)
class Result:
    """One benchmark at one size: Casebook and its baseline, in the same run."""

    name: str
    casebook: Stats
    baseline: Stats
    baseline_name: str
    #: Items per operation (records exported, ...) for a rate next to the latency.
    items: int | None = None

    @property
    def ratio(self) -> float:
        return self.casebook.p50_ms / self.baseline.p50_ms

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "casebook": self.casebook.as_dict(), "baseline": self.baseline.as_dict(),
                "baseline_name": self.baseline_name, "items": self.items,
                "ratio_p50": self.ratio, "ratio_p99": self.casebook.p99_ms / self.baseline.p99_ms}


def logged_in_client(seeded: Seeded) -> FlaskClient:
    client = seeded.app.test_client()
    response = client.post("/login", data={"username": BENCH_USER, "password": BENCH_PASSWORD})
    assert response.status_code == 302, "benchmark admin could not log in"
    return client


def get_ok(client: FlaskClient, url: str) -> None:
    response = client.get(url)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}")


def unlocked_record_ids(count: int) -> list[int]:
    """Records a save may change (not locked by a signature), spread over every site."""
    ids = db.session.scalars(select(Record.id).where(Record.locked_at.is_(None)).order_by(Record.id)).all()
    step = max(1, len(ids) // count)
    chosen = list(ids[::step][:count])
    if len(chosen) < count:
        raise RuntimeError(f"only {len(chosen)} unlocked records for {count} saves")
    return chosen


def exposure_form(seed: int) -> FormSpec:
    """A generated calcium exposure form (raw values) to save again and again."""
    generator = CaseGenerator(current_study(), seed)
    for k in range(100):
        for form in generator.case(k).forms:
            if form.instrument == SAVED_INSTRUMENT and form.status == 2 and not form.missing:
                return form
    raise RuntimeError("no complete calcium exposure among the first generated cases")


def stored_form(form: FormSpec) -> tuple[dict[str, Any], dict[str, str]]:
    """What the write path stores for `form` (typed values), for the bare INSERT to write."""
    person = Person.of(bench_admin())
    builder = CaseBuilder(current_study(), Team(person, person, person))
    built = builder.build(SiteRef(0, SITE), CaseSpec((form,), (), None))
    return built.forms[0].data, built.forms[0].missing


def save_form_vs_insert(seeded: Seeded, raw: Raw, iterations: int) -> Result:
    """One form through `save_form` (validation, logic, rules, audit chain, commit) vs one INSERT and commit."""
    study = current_study()
    admin = bench_admin()
    form = exposure_form(seed=1)
    data, missing = stored_form(form)
    record_ids = unlocked_record_ids(iterations + EXTRA_RUNS)
    submission = Submission(values=dict(form.values), missing=dict(form.missing), status=form.status)
    actor = Actor(admin, "bench")

    def casebook(i: int) -> None:
        record = db.session.get(Record, record_ids[i])
        save_form(db.session, study, actor, record, SAVED_INSTRUMENT, None, submission, expected_version=0)
        db.session.commit()

    insert = raw.sql("INSERT INTO form_instance (record_id, instrument, instance, data, missing, status, version, "
                     "updated_at, updated_by_id) VALUES (?, ?, ?, ?j, ?j, ?, 1, ?, ?)")
    with raw.connection() as connection:
        cursor = connection.cursor()

        def baseline(i: int) -> None:
            cursor.execute(insert, (record_ids[i], SAVED_INSTRUMENT, 1000 + i, json.dumps(data), json.dumps(missing),
                                    form.status, raw.timestamp(utcnow()), admin.id))
            connection.commit()

        casebook_stats, baseline_stats = compare(casebook, baseline, iterations)
    db.session.remove()
    return Result("Save one form (`save_form` + commit)", casebook_stats, baseline_stats,
                  "bare INSERT of the same row + commit")


def grid_vs_sql(seeded: Seeded, raw: Raw, iterations: int, *, last_page: bool) -> Result:
    """The record-status grid (50 rows) vs the three queries that fetch what it shows."""
    client = logged_in_client(seeded)
    site_id = db.session.scalar(select(Record.site_id).where(Record.label.startswith(f"{SITE}-")).limit(1))
    total = seeded.records // SITES
    page = max(1, math.ceil(total / PAGE_SIZE)) if last_page else 1
    url = f"/sites/{SITE}/records?page={page}"
    count_sql = raw.sql("SELECT count(*) FROM record WHERE site_id = ? AND deleted_at IS NULL")
    page_sql = raw.sql("SELECT id, label, number FROM record WHERE site_id = ? AND deleted_at IS NULL "
                       "ORDER BY number LIMIT ? OFFSET ?")
    with raw.connection() as connection:
        cursor = connection.cursor()

        def baseline(i: int) -> None:
            cursor.execute(count_sql, (site_id,))
            cursor.fetchone()
            cursor.execute(page_sql, (site_id, PAGE_SIZE, (page - 1) * PAGE_SIZE))
            ids = [row[0] for row in cursor.fetchall()]
            marks = ", ".join("?" for _ in ids)
            cursor.execute(raw.sql(f"SELECT record_id, instrument, instance, status FROM form_instance "  # noqa: S608
                                   f"WHERE record_id IN ({marks}) ORDER BY record_id, instrument, instance"), ids)
            cursor.fetchall()
            connection.rollback()

        casebook_stats, baseline_stats = compare(lambda i: get_ok(client, url), baseline, iterations)
    which = f"last page (page {page}, OFFSET {(page - 1) * PAGE_SIZE})" if last_page else "first page"
    return Result(f"Record-status grid, {which}, 50 rows of {total:,}", casebook_stats, baseline_stats,
                  "count + page + form statuses (3 SQL queries)")


def record_page_vs_sql(seeded: Seeded, raw: Raw, iterations: int) -> Result:
    """A record's page (forms, audit trail, queries, signature) vs the SQL that reads the same rows."""
    client = logged_in_client(seeded)
    labels = db.session.scalars(select(Record.label).order_by(Record.id)).all()
    rng = random.Random(seeded.records)  # noqa: S311 - which records to open, not a secret
    chosen = [rng.choice(labels) for _ in range(iterations + EXTRA_RUNS)]
    statements = [raw.sql(s) for s in (
        "SELECT record.id, record.label, site.code, site.name, site.timezone FROM record "
        "JOIN site ON site.id = record.site_id WHERE record.label = ? AND record.deleted_at IS NULL",
        "SELECT * FROM form_instance WHERE record_id = ? ORDER BY instrument, instance",
        "SELECT * FROM audit_event WHERE record_id = ? ORDER BY id DESC LIMIT 500",
        "SELECT * FROM data_query WHERE record_id = ? ORDER BY id",
        "SELECT * FROM signature WHERE record_id = ? AND voided_at IS NULL ORDER BY id DESC",
    )]
    with raw.connection() as connection:
        cursor = connection.cursor()

        def baseline(i: int) -> None:
            cursor.execute(statements[0], (chosen[i],))
            record_id = cursor.fetchone()[0]
            for statement in statements[1:]:
                cursor.execute(statement, (record_id,))
                cursor.fetchall()
            connection.rollback()

        casebook_stats, baseline_stats = compare(lambda i: get_ok(client, f"/records/{chosen[i]}"), baseline,
                                                 iterations)
    return Result("Record page (forms, audit trail, queries, signature)",
                  casebook_stats, baseline_stats, "the same 5 SELECTs")


def dashboard_vs_sql(seeded: Seeded, raw: Raw, iterations: int) -> Result:
    """`site_summaries` for every site (the home page's counts) vs the same aggregates in SQL."""
    admin_id = bench_admin().id

    def casebook(i: int) -> None:
        admin = db.session.get(User, admin_id)
        site_summaries(db.session, RecordRepository(db.session, admin).sites())
        db.session.remove()

    statements = [raw.sql(s) for s in (
        "SELECT id, code, name FROM site ORDER BY code",
        "SELECT site_id, count(*) FROM record WHERE deleted_at IS NULL GROUP BY site_id",
        "SELECT record.site_id, form_instance.status, count(*) FROM record JOIN form_instance "
        "ON form_instance.record_id = record.id WHERE record.deleted_at IS NULL GROUP BY record.site_id, "
        "form_instance.status",
        "SELECT data_query.site_id, data_query.status, count(*) FROM data_query JOIN record "
        "ON record.id = data_query.record_id WHERE record.deleted_at IS NULL AND data_query.status <> 'closed' "
        "GROUP BY data_query.site_id, data_query.status",
    )]
    with raw.connection() as connection:
        cursor = connection.cursor()

        def baseline(i: int) -> None:
            for statement in statements:
                cursor.execute(statement)
                cursor.fetchall()
            connection.rollback()

        casebook_stats, baseline_stats = compare(casebook, baseline, iterations)
    return Result("Dashboard aggregates (`site_summaries`, all sites)", casebook_stats, baseline_stats,
                  "the same GROUP BY queries")


def page_vs_its_sql(seeded: Seeded, raw: Raw, iterations: int, *, url: str, name: str,
                    before: Callable[[int], None] | None = None) -> Result:
    """A page (through the test client) vs replaying, raw, the SELECTs the page runs when it
    remembers nothing (`_forget_everything`): every aggregate it shows, computed.

    The statements are captured from one request at the cursor, in the driver's own
    parameter style, so the baseline is exactly the SQL that feeds the page without the ORM,
    the Python around it and the template. `before` (untimed) runs ahead of each request.
    """
    client = logged_in_client(seeded)
    get_ok(client, url)  # compiled statements and templates, as in a running server
    _forget_everything(0)
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            captured.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        get_ok(client, url)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    with raw.connection() as connection:
        cursor = connection.cursor()

        def baseline(i: int) -> None:
            for statement, parameters in captured:
                cursor.execute(statement, parameters)
                cursor.fetchall()
            connection.rollback()

        casebook_stats, baseline_stats = compare(lambda i: get_ok(client, url), baseline, iterations, before=before)
    return Result(f"{name} ({seeded.records:,} records)", casebook_stats, baseline_stats,
                  f"the page's own {len(captured)} SELECTs when nothing is remembered, replayed raw")


def _save_at_one_site() -> Callable[[int], None]:
    """A coordinator's save at SITE before each view: one changed enrolment form."""
    study = current_study()
    admin_id = bench_admin().id
    record_id = db.session.scalar(select(Record.id).where(Record.label.startswith(f"{SITE}-"),
                                                          Record.locked_at.is_(None)).limit(1))

    def save(i: int) -> None:
        record = db.session.get(Record, record_id)
        save_form(db.session, study, Actor(db.session.get(User, admin_id), "bench"), record, "enrolment", 1,
                  Submission(values={"ga_weeks": str(30 + i % 10)}), expected_version=None,
                  reason="Source document re-read", confirm_warnings=True)
        db.session.commit()
        db.session.remove()

    return save


def _forget_everything(i: int) -> None:
    """What this process remembers and what the database keeps for every process."""
    forget_remembered(db.session)
    db.session.commit()
    db.session.remove()


#: The dashboards and the analysis remember results until the forms behind them change; each
#: is measured unchanged, right after a save at one site, as a process's first view (the
#: totals kept in the database, the analysis and charts not), and with nothing remembered.
DASHBOARD_STATES: dict[str, Callable[[], Callable[[int], None] | None]] = {
    "unchanged data": lambda: None,
    f"after a save at {SITE}": _save_at_one_site,
    "after a restart": lambda: lambda i: forget_remembered(),
    "nothing remembered": lambda: _forget_everything,
}


def study_dashboard_vs_sql(seeded: Seeded, raw: Raw, iterations: int, *, state: str) -> Result:
    """The study dashboard (every site side by side, enrolment chart) vs the SQL that feeds it."""
    return page_vs_its_sql(seeded, raw, iterations, url="/dashboard/study", name=f"Study dashboard page, {state}",
                           before=DASHBOARD_STATES[state]())


def analysis_vs_sql(seeded: Seeded, raw: Raw, iterations: int, *, state: str) -> Result:
    """The case-series analysis page (Table 1, outcome, Kaplan-Meier, four plots) vs its SQL."""
    return page_vs_its_sql(seeded, raw, iterations, url="/analysis", name=f"Analysis page, {state}",
                           before=DASHBOARD_STATES[state]())


def site_dashboard_vs_sql(seeded: Seeded, raw: Raw, iterations: int, *, state: str) -> Result:
    """One site's dashboard (completeness, queries, signatures, chart) vs the SQL that feeds it."""
    return page_vs_its_sql(seeded, raw, iterations, url=f"/sites/{SITE}/dashboard",
                           name=f"Site dashboard page ({SITE}), {state}", before=DASHBOARD_STATES[state]())


def _export_vs_read_sql(seeded: Seeded, raw: Raw, iterations: int, name: str,
                        write: Callable[[ExportJob, Path], None]) -> Result:
    """`write` of a fresh pooled export job (census included) vs `pd.read_sql` + `to_csv` of form_instance."""
    study = current_study()
    profile = get_profile("pooled_case_series")
    with tempfile.TemporaryDirectory(prefix="casebook-bench-") as tmp:
        out = Path(tmp)

        def casebook(i: int) -> None:
            write(ExportJob(db.session, study, resolve_scope(db.session, None, profile, None)), out)
            db.session.rollback()

        def baseline(i: int) -> None:
            pd.read_sql("SELECT * FROM form_instance", raw.engine).to_csv(out / "form_instance.csv", index=False)

        casebook_stats, baseline_stats = compare(casebook, baseline, iterations, warmup=0)
    return Result(name, casebook_stats, baseline_stats, "`pd.read_sql` + `to_csv` of form_instance",
                  items=seeded.records)


def _csv_tables(job: ExportJob, out: Path) -> None:
    """The bundle's CSV step alone, with the bundle's own code: batches, prepared records, rows, CsvWriter."""
    writers = {t.name: CsvWriter(out / f"{t.name}.csv", t, labels=False) for t in job.plan.tables}

    def write(batch: list[SourceRecord]) -> None:
        views = [job.preparer.view(rec) for rec in batch]
        for table in job.plan.tables:
            writers[table.name].write(job.plan.block(table, views))

    each_batch(db.session, job.scope.site_ids, job.instruments, write)
    for writer in writers.values():
        writer.close()


#: A small study's sub-second CSV export is timed until this many records have been exported
#: in all (50 runs at 1,000 records, 5 at 10,000), so that its median is not the luck of three
#: runs on a machine whose speed drifts by a third within minutes; larger studies take the
#: given runs.
EXPORT_SAMPLE_RECORDS = 50_000


def export_csv_vs_read_sql(seeded: Seeded, raw: Raw, iterations: int) -> Result:
    """The pooled export's CSV tables (issue 4's "to CSV" comparison) vs `read_sql` + `to_csv`."""
    iterations = max(iterations, EXPORT_SAMPLE_RECORDS // seeded.records)
    return _export_vs_read_sql(seeded, raw, iterations,
                               "Pooled de-identified export, CSV tables only (census, de-identification, CSV)",
                               _csv_tables)


def export_vs_read_sql(seeded: Seeded, raw: Raw, iterations: int) -> Result:
    """The whole pooled de-identified bundle vs `read_sql` + `to_csv`."""
    return _export_vs_read_sql(seeded, raw, iterations,
                               "Pooled de-identified export (zip: CSV, Parquet, Stata, SPSS, ODM, codebook, analysis)",
                               lambda job, out: job.write(out / "bundle.zip", COMMAND_LINE))


def api_export_vs_sql(seeded: Seeded, raw: Raw, iterations: int) -> Result:
    """`POST /api/ content=record format=csv` (every record) vs reading and writing the same rows raw."""
    client = seeded.app.test_client()
    fields = {"token": seeded.token, "content": "record", "format": "csv"}
    statement = raw.sql("SELECT record.label, form_instance.instrument, form_instance.instance, form_instance.data, "
                        "form_instance.missing, form_instance.status FROM form_instance JOIN record "
                        "ON record.id = form_instance.record_id WHERE record.deleted_at IS NULL "
                        "ORDER BY record.id, form_instance.instrument, form_instance.instance")

    def casebook(i: int) -> None:
        response = client.post("/api/", data=fields)
        if response.status_code != 200:
            raise RuntimeError(f"API export answered {response.status_code}")
        response.get_data()
        db.session.rollback()

    with raw.connection() as connection:
        cursor = connection.cursor()

        def baseline(i: int) -> None:
            cursor.execute(statement)
            buffer = io.StringIO()
            csv.writer(buffer).writerows(cursor)
            connection.rollback()

        casebook_stats, baseline_stats = compare(casebook, baseline, iterations, warmup=1)
    return Result("API record export (CSV, every record)", casebook_stats, baseline_stats,
                  "SELECT of the form rows + csv.writer", items=seeded.records)


#: Issue 5 asks for an import of 5,000 records in one call (fewer when the database is smaller).
IMPORTED_RECORDS = 5000


def api_import_vs_insert(seeded: Seeded, raw: Raw, iterations: int) -> Result:
    """`POST /api/ content=record data=...` of up to 5,000 new records (copies of existing ones, in one
    call) vs INSERTs of the same records and form rows."""
    imported = min(IMPORTED_RECORDS, seeded.records)
    client = seeded.app.test_client()
    export = client.post("/api/", data={"token": seeded.token, "content": "record", "format": "csv",
                                        "exportDataAccessGroups": "true"}).get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(export)))
    first = sorted({row["record_id"] for row in rows}, key=lambda label: label)[:imported]
    kept = [row for row in rows if row["record_id"] in set(first)]
    payload = io.StringIO()
    writer = csv.DictWriter(payload, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(kept)
    fields = {"token": seeded.token, "content": "record", "format": "csv", "data": payload.getvalue(),
              "forceAutoNumber": "true", "returnContent": "count"}

    def casebook(i: int) -> None:
        response = client.post("/api/", data=fields)
        if response.status_code != 200:
            raise RuntimeError(f"API import answered {response.status_code}: {response.get_data(as_text=True)[:300]}")
        db.session.remove()

    source = db.session.execute(
        select(Record.id, Record.site_id).where(Record.label.in_(first)).order_by(Record.id)
    ).all()
    forms = _form_rows([record_id for record_id, _ in source], raw)
    admin_id = bench_admin().id
    with raw.connection() as connection:
        cursor = connection.cursor()
        insert_record = raw.sql("INSERT INTO record (site_id, number, label, created_at, created_by_id) "
                                "VALUES (?, ?, ?, ?, ?)")
        insert_form = raw.sql("INSERT INTO form_instance (record_id, instrument, instance, data, missing, status, "
                              "version, updated_at, updated_by_id) VALUES (?, ?, ?, ?j, ?j, ?, 1, ?, ?)")
        new_id = raw.sql("SELECT id FROM record WHERE label = ?")

        def baseline(i: int) -> None:
            now = raw.timestamp(utcnow())
            for number, (record_id, site_id) in enumerate(source):
                label = f"RAW{i}-{number:04d}"
                cursor.execute(insert_record, (site_id, 100000 * (i + 1) + number, label, now, admin_id))
                cursor.execute(new_id, (label,))
                copied = cursor.fetchone()[0]
                cursor.executemany(insert_form, [(copied, *form[1:], now, admin_id) for form in forms[record_id]])
            connection.commit()

        casebook_stats, baseline_stats = compare(casebook, baseline, iterations, warmup=0)
    return Result(f"API record import ({imported:,} new records in one call, CSV)", casebook_stats, baseline_stats,
                  "INSERTs of the same records and form rows + commit", items=imported)


def _form_rows(record_ids: list[int], raw: Raw) -> dict[int, list[tuple[Any, ...]]]:
    """The stored form rows of `record_ids`, as INSERT parameters (JSON as text)."""
    rows: dict[int, list[tuple[Any, ...]]] = {record_id: [] for record_id in record_ids}
    with raw.connection() as connection:
        cursor = connection.cursor()
        marks = ", ".join("?" for _ in record_ids)
        cursor.execute(raw.sql(f"SELECT record_id, instrument, instance, data, missing, status "  # noqa: S608
                               f"FROM form_instance WHERE record_id IN ({marks})"), record_ids)
        for record_id, instrument, instance, data, missing, status in cursor.fetchall():
            as_text = [value if isinstance(value, str) else json.dumps(value) for value in (data, missing)]
            rows[record_id].append((record_id, instrument, instance, *as_text, status))
        connection.rollback()
    return rows

