"""Schemathesis against the API's own OpenAPI description, in process (no network).

For every `content` value the endpoint dispatches (taken from its handler table), bodies
generated from the published schema are sent with a valid token: the endpoint never
answers 5xx, and every answer conforms to the description (status codes, content types,
the error object's shape). Schema-valid bodies may still be refused with a 4xx: the
meaning of a REDCap call depends on combinations of parameters (data only with
content=record, a record that must exist) that a JSON schema cannot express, so
schemathesis's "valid data must be accepted" check is the one left out. Imports get a
test of their own, with rows in the API's real columns, since random strings are rarely
a payload the importer gets far into.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import func, select

from app.api.handlers import CONTENTS
from app.audit.models import AuditEvent
from app.extensions import db
from app.study import current_study
from tests.test_api import call, token
from tests.test_fuzz_forms import raw_text

FUZZ = settings(max_examples=15, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.filter_too_much])


@pytest.mark.parametrize("username", ["admin", "statistician"])
@pytest.mark.parametrize("content", list(CONTENTS))
def test_api_never_fails_and_answers_as_described(demo, content, username):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", demo)
    operation = schema["/api/"]["POST"]
    valid_token = token(username)

    @FUZZ
    @given(case=operation.as_strategy())
    def check(case):
        case.body = {**case.body, "token": valid_token, "content": content}
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    check()


def import_columns(client, tok: str) -> list[str]:
    """The columns an import may carry, as the API itself lists them, plus REDCap's own."""
    names = call(client, tok, content="exportFieldNames", format="json").get_json()
    return sorted({n["export_field_name"] for n in names} | {f"{i.name}_complete" for i in current_study().instruments}
                  | {"redcap_repeat_instrument", "redcap_repeat_instance", "redcap_data_access_group"})


def as_payload(rows: list[dict[str, str]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, sorted({key for row in rows for key in row}))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_fuzzed_imports_are_saved_or_refused_whole(demo, fmt):
    """Rows of arbitrary values in real columns (existing and new records): never a 5xx, and a
    refused import writes nothing at all."""
    client = demo.test_client()
    tok = token("coordinator")
    labels = st.sampled_from(["KMU-0001", "KMU-0002", "NTH-0001", "new", "1", ""])
    row = st.dictionaries(st.sampled_from(import_columns(client, tok)), st.one_of(raw_text(), labels), max_size=8)

    @FUZZ
    @given(rows=st.lists(row, min_size=1, max_size=4), auto=st.booleans(),
           overwrite=st.sampled_from(["normal", "overwrite"]))
    def check(rows, auto, overwrite):
        db.session.expire_all()
        before = db.session.scalar(select(func.count()).select_from(AuditEvent))
        response = call(client, tok, content="record", format=fmt, data=as_payload(rows, fmt),
                        forceAutoNumber=str(auto).lower(), overwriteBehavior=overwrite, reason="fuzzing")
        assert response.status_code < 500, response.get_data(as_text=True)[:500]
        db.session.expire_all()
        if response.status_code >= 400:
            assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == before

    check()
