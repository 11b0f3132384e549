"""Exports started from the browser: a background job (app/jobs) whose progress lives in a file, whose
bundle only its requester may download, and whose outcome is audited like any export."""

from __future__ import annotations

import io
import json
import time
import zipfile

import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from app.jobs import STALE_AFTER_SECONDS
from tests.conftest import login
from tests.exports_support import add_record
from tests.jobs_support import finished, job_id

BACKGROUND_ENDPOINTS = {"exports.start", "exports.job", "exports.job_state", "exports.job_bundle"}


@pytest.fixture
def jobs(demo, tmp_path):
    demo.config["EXPORT_JOBS_DIR"] = str(tmp_path / "export-jobs")
    return tmp_path / "export-jobs"


def _start(client, profile: str, site: str = "") -> str:
    return job_id(client.post(f"/exports/{profile}/jobs", data={"site": site} if site else {}))


def _finished(client, job: str) -> dict:
    return finished(client, f"/exports/jobs/{job}/state")


@pytest.mark.parametrize(("username", "profile", "site", "expected"), [
    ("statistician", "pooled_case_series", "", 303),
    ("admin", "site_full", "NTH", 303),
    ("investigator", "site_full", "KMU", 303),
    ("investigator", "site_full", "NTH", 404),
    ("investigator", "pooled_case_series", "", 403),
    ("statistician", "site_full", "KMU", 403),
    ("coordinator", "site_full", "KMU", 403),
    ("monitor", "pooled_case_series", "", 403),
    ("admin", "site_full", "", 400),
    (None, "pooled_case_series", "", 302),
])
def test_who_may_start_an_export(demo, jobs, username, profile, site, expected):
    client = demo.test_client()
    if username:
        login(client, username)
    response = client.post(f"/exports/{profile}/jobs", data={"site": site} if site else {})
    assert response.status_code == expected
    if expected == 303:
        _finished(client, response.headers["Location"].rsplit("/", 1)[-1])
    else:
        assert not jobs.exists() or not any(jobs.iterdir())


def test_progress_page_then_the_bundle_for_its_requester_only(demo, jobs, as_user):
    add_record("KMU", {"enrolment": {"case_source": "1", "sex": "2", "ga_weeks": "33", "dob": "2019-07-14"}})
    db.session.commit()
    client = as_user("statistician")
    job_id = _start(client, "pooled_case_series")
    page = client.get(f"/exports/jobs/{job_id}")
    assert page.status_code == 200
    assert 'id="export-progress"' in page.get_data(as_text=True)

    state = _finished(client, job_id)
    assert state["phase"] == "done" and state["percent"] == 100
    assert state["done"] == state["total"] == 4  # the three published cases and this one
    bundle = client.get(f"/exports/jobs/{job_id}/bundle")
    assert bundle.status_code == 200 and bundle.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(bundle.data))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["exported_by"]["username"] == "statistician"
    assert manifest["scope"]["records"] == 4
    bundle.close()

    # Another user, even an admin who may make the same export, never gets this bundle or its state.
    for other in ("admin", "investigator"):
        intruder = as_user(other)
        assert intruder.get(f"/exports/jobs/{job_id}/bundle").status_code == 404
        assert intruder.get(f"/exports/jobs/{job_id}/state").status_code == 404
        assert intruder.get(f"/exports/jobs/{job_id}").status_code == 404
    assert client.get("/exports/jobs/..%2F..%2Fetc/state").status_code == 404

    db.session.expire_all()
    audited = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "export")).all()
    assert [(e.username, json.loads(e.new_value)["records"]) for e in audited] == [("statistician", 4)]


def test_a_refused_export_fails_with_its_reason_and_nothing_to_download(demo, jobs, as_user, monkeypatch):
    def refuse(self, *args, **kwargs):
        from app.exports.disclosure import ExportRefused
        raise ExportRefused("Export refused: 1 combination(s) of quasi-identifiers have fewer than 3 records.")

    monkeypatch.setattr("app.exports.services.ExportJob.write", refuse)
    client = as_user("statistician")
    job_id = _start(client, "pooled_case_series")
    state = _finished(client, job_id)
    assert state["phase"] == "failed"
    assert state["message"].startswith("Export refused: 1 combination")
    assert client.get(f"/exports/jobs/{job_id}/bundle").status_code == 404
    assert not list(jobs.glob("*/bundle.zip*"))


def test_a_job_whose_process_died_is_reported_stopped_and_purged(demo, jobs, as_user, monkeypatch):
    client = as_user("statistician")
    job_id = _start(client, "pooled_case_series")
    _finished(client, job_id)
    state_file = jobs / job_id / "state.json"
    raw = json.loads(state_file.read_text())
    raw.update(phase="writing", updated=time.time() - STALE_AFTER_SECONDS - 5)
    state_file.write_text(json.dumps(raw))
    state = client.get(f"/exports/jobs/{job_id}/state").get_json()
    assert state["phase"] == "failed" and "stopped before it finished" in state["message"]
    _finished(client, _start(client, "pooled_case_series"))  # starting another job purges the dead one
    assert not (jobs / job_id).exists()
