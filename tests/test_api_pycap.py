"""A real REDCap client (PyCap, from PyPI) against Casebook served on a real loopback socket.

Nothing here is mocked: PyCap builds its own requests (0-based `fields[i]` lists, Python
booleans as `True`/`False`), decides errors by the body alone, and reads CSV into pandas
as it would against REDCap. The 20,000-record test creates its records with bulk inserts
(test setup only); every read goes through the API under test.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest
import requests
from redcap import Project, RedcapError
from semantic_version import Version
from sqlalchemy import func, insert, select

from app.api.tokens import issue_token
from app.auth.models import Site, User
from app.extensions import db
from app.records.models import FormInstance, Record
from tests.browser_support import live_server

CASES = ["KMU-0001", "KMU-0002", "KMU-0003"]


def token(username: str) -> str:
    user = db.session.scalar(select(User).where(User.username == username))
    value = issue_token(db.session, user)
    db.session.commit()
    return value


def main_rows(rows: list[dict]) -> dict[str, dict]:
    return {row["record_id"]: row for row in rows if not row["redcap_repeat_instrument"]}


def test_pycap_round_trip_on_a_live_server(demo):
    coordinator, admin = token("coordinator"), token("admin")
    with live_server(demo) as base:
        project = Project(f"{base}/api/", coordinator)
        assert project.export_version() == Version("14.5.2")

        metadata = project.export_metadata()
        assert metadata[0]["field_name"] == "record_id" and project.def_field == "record_id"
        assert {"field_name", "form_name", "select_choices_or_calculations", "branching_logic",
                "text_validation_type_or_show_slider_number", "identifier", "required_field"} <= set(metadata[0])
        names = {row["export_field_name"] for row in project.export_field_names()}
        assert {"skin_findings___2", "skin_findings___nr", "outcome_complete"} <= names
        assert "age_presentation_days" not in names  # calc fields are not importable, as in REDCap
        assert project.is_longitudinal is False
        with pytest.raises(RedcapError):
            project.export_instrument_event_mappings()

        exported = project.export_records()
        cases = main_rows(exported)
        assert sorted(cases) == CASES
        first = cases["KMU-0001"]
        assert (first["sex"], first["dob"], first["age_presentation_days"]) == ("2", "NR", "14")
        assert (first["skin_findings___2"], first["skin_findings___1"], first["outcome_complete"]) == ("1", "0", "2")
        repeats = [r for r in exported if r["redcap_repeat_instrument"] == "calcium_exposure"]
        assert [(r["record_id"], r["redcap_repeat_instance"], r["drug"]) for r in repeats] == [
            (label, "1", "1") for label in CASES]

        # The three published cases imported again, numbered by Casebook at the coordinator's site.
        pairs = project.import_records(exported, force_auto_number=True, return_content="auto_ids")
        assert pairs == ["KMU-0004,KMU-0001", "KMU-0005,KMU-0002", "KMU-0006,KMU-0003"]

        frame = project.export_records(format_type="df")
        assert frame.index.name == "record_id"
        mains = frame[frame["redcap_repeat_instrument"].isna()]
        assert list(mains.index) == [*CASES, "KMU-0004", "KMU-0005", "KMU-0006"]
        compared = [c for c in mains.columns if c != "redcap_repeat_instance"]
        pd.testing.assert_series_equal(mains.loc["KMU-0004", compared], mains.loc["KMU-0001", compared],
                                       check_names=False)
        assert mains.loc["KMU-0006", "time_to_resolution_days"] == 182

        males = main_rows(project.export_records(filter_logic="[sex] = '1'"))
        assert sorted(males) == ["KMU-0002", "KMU-0005"]

        with pytest.raises(RedcapError, match="ga_weeks"):
            project.import_records([{"record_id": "KMU-0004", "ga_weeks": "33"},
                                    {"record_id": "KMU-0005", "ga_weeks": "99"}])
        assert main_rows(project.export_records(records=["KMU-0004"], fields=["ga_weeks"]))["KMU-0004"][
            "ga_weeks"] == "NR"
        with pytest.raises(RedcapError, match="permissions"):
            project.delete_records(["KMU-0004"])

        assert Project(f"{base}/api/", admin).delete_records(["KMU-0004", "KMU-0005", "KMU-0006"]) == 3
        assert sorted(main_rows(project.export_records(fields=["record_id"]))) == CASES


def _bulk_records(count: int) -> list[str]:
    """`count` records at RVH with an enrolment form each, inserted directly (setup data only)."""
    site = db.session.scalar(select(Site).where(Site.code == "RVH"))
    labels = [f"RVH-{n:05d}" for n in range(1, count + 1)]
    db.session.execute(insert(Record), [{"site_id": site.id, "number": n, "label": label}
                                        for n, label in enumerate(labels, start=1)])
    ids = dict(db.session.execute(select(Record.label, Record.id).where(Record.site_id == site.id)).all())
    db.session.execute(insert(FormInstance), [
        {"record_id": ids[label], "instrument": "enrolment", "instance": 1, "version": 1, "status": 1,
         "data": {"case_source": "2", "sex": str(n % 2 + 1), "ga_weeks": 30 + n % 10}, "missing": {}}
        for n, label in enumerate(labels)
    ])
    site.last_record_number = count
    db.session.commit()
    return labels


def test_pycap_batches_of_500_over_20000_records(demo):
    labels = _bulk_records(20_000)
    assert db.session.scalar(select(func.count()).select_from(Record)) == 20_003
    admin = token("admin")
    started = time.monotonic()
    with live_server(demo) as base:
        project = Project(f"{base}/api/", admin)
        ids = [row["record_id"] for row in project.export_records(fields=["record_id"])]
        assert ids == [*CASES, *labels]
        seen: list[str] = []
        for start in range(0, len(ids), 500):
            batch = project.export_records(records=ids[start:start + 500], fields=["record_id", "sex", "ga_weeks"])
            seen += [row["record_id"] for row in batch if not row["redcap_repeat_instrument"]]
            assert len(batch) == len(ids[start:start + 500])
        assert seen == ids
        assert main_rows(batch)["RVH-20000"]["ga_weeks"] == "39"

        # The whole study in one call arrives as a stream (no Content-Length), not built in memory first.
        with requests.post(f"{base}/api/", data={"token": admin, "content": "record", "format": "csv"},
                           stream=True, timeout=120) as response:
            assert response.status_code == 200 and "Content-Length" not in response.headers
            lines = sum(chunk.count(b"\n") for chunk in response.iter_content(1 << 16))
        assert lines == 1 + 20_003 + 3 + 3  # header, main rows, calcium and imaging instances of the cases
    assert time.monotonic() - started < 60
