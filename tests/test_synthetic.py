"""Synthetic data: every generated form is valid by the write path's own rules, the bulk path
stores and audits exactly what the services would, the audit chain holds, and a seed is
reproducible whatever the batch size or number of worker processes."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.audit.services import replay, verify_chain
from app.auth.models import Site, User
from app.auth.services import create_site, set_password
from app.extensions import db
from app.records.models import FormInstance, FormStatus, Record
from app.records.services import Actor, Submission, apply_logic, create_record, record_context, save_form
from app.review.models import DataQuery, QueryStatus, Signature
from app.review.services import answer_query, close_query, raise_query, sign_record
from app.study import current_study
from app.study.fieldtypes import field_type
from app.synthetic.bulk import (
    SOURCE,
    BulkWriter,
    CaseBuilder,
    SiteRef,
    ensure_sites,
    ensure_team,
    seed_synthetic,
)
from app.synthetic.generator import CaseGenerator, CaseSpec

SITES, RECORDS, SEED = 2, 40, 7


def seed_cli(app: Flask, *extra: str, seed: int = SEED) -> None:
    result = app.test_cli_runner().invoke(
        args=["seed-synthetic", "--sites", str(SITES), "--records", str(RECORDS), "--seed", str(seed), *extra]
    )
    assert result.exit_code == 0, result.output
    assert f"Added {RECORDS} synthetic records" in result.output


@pytest.fixture
def seeded(app: Flask) -> Flask:
    seed_cli(app)
    return app


def forms_by_record() -> dict[Record, list[FormInstance]]:
    grouped: dict[Record, list[FormInstance]] = {r: [] for r in db.session.scalars(select(Record))}
    for form in db.session.scalars(select(FormInstance).order_by(FormInstance.id)):
        grouped[form.record].append(form)
    return grouped


def content(record: Record) -> dict[str, Any]:
    """What a record holds, without ids, labels or times: for comparing two records."""
    forms = db.session.scalars(select(FormInstance).where(FormInstance.record_id == record.id)).all()
    queries = db.session.scalars(select(DataQuery).where(DataQuery.record_id == record.id).order_by(DataQuery.id))
    signatures = db.session.scalars(select(Signature).where(Signature.record_id == record.id))
    return {
        "forms": {(f.instrument, f.instance): (f.data, f.missing, f.status) for f in forms},
        "queries": [(q.instrument, q.instance, q.field, q.status, [(m.action, m.text) for m in q.messages])
                    for q in queries],
        "signatures": [(s.meaning, s.printed_name) for s in signatures],
        "locked": record.locked_at is not None,
    }


def test_every_stored_form_passes_the_write_path_rules(seeded):
    study = current_study()
    grouped = forms_by_record()
    assert len(grouped) == RECORDS
    for forms in grouped.values():
        for form in forms:
            instrument = study.instrument(form.instrument)
            names = {f.name for f in instrument.data_fields}
            assert set(form.data) <= names and set(form.missing) <= names
            for f in instrument.data_fields:
                value, code = form.data.get(f.name), form.missing.get(f.name)
                assert value is None or code is None, f"{f.name}: both a value and a code"
                if code is not None:
                    assert f.allow_missing_codes and code in study.missing_code_values
                if value is not None and field_type(f).is_input:
                    kind = field_type(f)
                    assert kind.parse(f, kind.to_form(value)) == value, f"{f.name}={value!r} does not re-validate"
            data, missing = dict(form.data), dict(form.missing)
            context = record_context(study, forms, exclude=(form.instrument, form.instance))
            hidden = apply_logic(study, instrument, data, missing, context)
            for name in hidden:
                assert name not in form.data and name not in form.missing, f"{name} is hidden but filled"
            assert {k: v for k, v in data.items() if v is not None} == form.data, "calculations differ"
            assert missing == form.missing
            if form.status == FormStatus.COMPLETE:
                empty = [f.name for f in instrument.data_fields
                         if f.required and field_type(f).is_input and f.name not in hidden
                         and f.name not in form.data and f.name not in form.missing]
                assert not empty, f"Complete {form.instrument} without {empty}"


def test_realistic_mix_of_instances_codes_statuses_queries_and_signatures(seeded):
    study = current_study()
    forms = db.session.scalars(select(FormInstance)).all()
    for instrument in study.instruments:
        if instrument.repeatable:
            assert max(f.instance for f in forms if f.instrument == instrument.name) > 1, instrument.name
    codes = Counter(code for f in forms for code in f.missing.values())
    assert len(codes) >= 2 and sum(codes.values()) >= 5
    assert {f.status for f in forms} == {0, 1, 2}
    assert len(set(db.session.scalars(select(Record.site_id)))) == SITES

    queries = db.session.scalars(select(DataQuery)).all()
    assert queries and all(q.messages and q.messages[0].action == "raise" for q in queries)
    for query in queries:
        assert study.field(query.field).instrument == query.instrument
        steps = [m.action for m in query.messages]
        assert steps == {QueryStatus.OPEN: ["raise"], QueryStatus.ANSWERED: ["raise", "answer"],
                         QueryStatus.CLOSED: ["raise", "answer", "close"]}[query.status]
    signatures = db.session.scalars(select(Signature)).all()
    assert signatures
    for signature in signatures:
        record = db.session.get(Record, signature.record_id)
        assert record.locked_at is not None
        assert {f.status for f in forms if f.record_id == record.id} == {FormStatus.COMPLETE}
    sources = set(db.session.scalars(select(AuditEvent.source).where(AuditEvent.record_id.is_not(None))))
    assert sources == {SOURCE}


def test_audit_chain_is_valid_and_replays_to_the_stored_values(seeded):
    report = verify_chain(db.session)
    assert report.ok, report.problem
    assert report.checked > RECORDS * 20
    for record, forms in list(forms_by_record().items())[::4]:
        replayed = replay(db.session, record.id)
        stored = {(f.instrument, f.instance): f for f in forms}
        assert set(replayed) == set(stored), record.label
        for key, form in stored.items():
            assert replayed[key].data == form.data, (record.label, key)
            assert replayed[key].missing == form.missing, (record.label, key)
            assert replayed[key].status == form.status, (record.label, key)


def test_same_seed_same_cases_whatever_the_batches_and_workers(seeded):
    """Case k of a seed is the same in one batch in-process or in batches of 10 built by two workers."""
    study = current_study()
    for _ in seed_synthetic(db.session, study, sites=SITES, records=RECORDS, seed=SEED, batch_size=10,
                            workers=2, study_dir=seeded.config["STUDY_DIR"]):
        pass
    db.session.commit()
    per_site = RECORDS // SITES
    for site in db.session.scalars(select(Site).where(Site.code.like("SYN%"))):
        records = {r.number: r for r in db.session.scalars(select(Record).where(Record.site_id == site.id))}
        assert len(records) == 2 * per_site
        for number in range(1, per_site + 1):
            assert content(records[number]) == content(records[number + per_site]), f"{site.code} #{number}"
    assert verify_chain(db.session).ok


def test_another_seed_gives_other_cases(app):
    generator = CaseGenerator(current_study(), SEED)
    assert [generator.case(k) for k in range(5)] == [CaseGenerator(current_study(), SEED).case(k) for k in range(5)]
    assert [generator.case(k) for k in range(5)] != [CaseGenerator(current_study(), SEED + 1).case(k) for k in range(5)]


def _covering_cases(generator: CaseGenerator, builder: CaseBuilder) -> list[CaseSpec]:
    """A few generated cases that between them use every feature the bulk path writes."""
    site = SiteRef(0, "X")
    wanted: dict[str, Any] = {
        "signed": lambda c: c.signature is not None,
        "closed query": lambda c: any(q.closed for q in c.queries),
        "open query": lambda c: any(q.answer is None for q in c.queries),
        "published": lambda c: c.forms[0].values.get("case_source") == "3",
        "missing code": lambda c: any(f.missing for f in c.forms),
        "incomplete": lambda c: any(f.status == FormStatus.INCOMPLETE for f in c.forms),
        "warning": lambda c: any(row.action == "dq_warning_confirmed"
                                 for form in builder.build(site, c).forms for row in form.audit),
    }
    chosen: list[CaseSpec] = []
    for k in range(3000):
        case = generator.case(k)
        hits = [name for name, test in wanted.items() if test(case)]
        if hits:
            chosen.append(case)
            for name in hits:
                del wanted[name]
        if not wanted:
            return chosen
    pytest.fail(f"no generated case has: {', '.join(wanted)}")


def _audit_lines(record_id: int) -> list[tuple[Any, ...]]:
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.record_id == record_id).order_by(AuditEvent.id))
    return [(e.action, e.username, e.instrument, e.instance, e.field, e.old_value, e.new_value,
             re.sub(r"query #\d+", "query #N", e.reason or ""), e.source) for e in events]


def test_bulk_path_stores_and_audits_what_the_write_path_would(app):
    study = current_study()
    generator = CaseGenerator(study, SEED)
    ref = create_site(db.session, "REF", "Reference site")
    bulk_site = ensure_sites(db.session, 1)[0]
    team = ensure_team(db.session, [bulk_site, SiteRef(ref.id, ref.code)])
    builder = CaseBuilder(study, team)
    cases = _covering_cases(generator, builder)
    bulk_ids = BulkWriter(db.session, team).write([builder.build(bulk_site, case) for case in cases])

    users = {p.username: db.session.get(User, p.id) for p in (team.coordinator, team.monitor, team.investigator)}
    coordinator = Actor(users[team.coordinator.username], SOURCE)
    monitor = Actor(users[team.monitor.username], SOURCE)
    investigator = Actor(users[team.investigator.username], SOURCE)
    set_password(db.session, investigator.user, "synthetic-signing-password-1")
    reference_ids = []
    for case in cases:
        record = create_record(db.session, coordinator, ref)
        for form in case.forms:
            save_form(db.session, study, coordinator, record, form.instrument, form.instance,
                      Submission(values=form.values, missing=form.missing, status=form.status), expected_version=0)
        for q in case.queries:
            query = raise_query(db.session, study, monitor, record, q.instrument, q.instance, q.field, q.text)
            if q.answer:
                answer_query(db.session, coordinator, record, query, q.answer)
            if q.closed:
                close_query(db.session, monitor, record, query)
        if case.signature:
            sign_record(db.session, investigator, record, "synthetic-signing-password-1", case.signature)
        reference_ids.append(record.id)
    db.session.commit()

    for bulk_id, reference_id in zip(bulk_ids, reference_ids, strict=True):
        bulk, reference = db.session.get(Record, bulk_id), db.session.get(Record, reference_id)
        assert content(bulk) == content(reference)
        assert _audit_lines(bulk_id) == _audit_lines(reference_id)
    assert verify_chain(db.session).ok
