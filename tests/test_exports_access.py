"""Who gets which export, through the web pages and the command line, and the audit row."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from tests.conftest import login
from tests.exports_support import add_record, pseudonyms

IDENTIFIERS = {"initials": "ZQWXKV", "hospital_number": "HN-4471-XQ", "dob": "2019-07-14",
               "nicu_admission_date": "2019-07-15"}
ENROLMENT = {**IDENTIFIERS, "case_source": "1", "sex": "2", "ga_weeks": "33"}

ENDPOINTS = {
    "index": ("GET", "/exports", None),
    "pooled:preview": ("GET", "/exports/pooled_case_series", None),
    "pooled:download": ("POST", "/exports/pooled_case_series", {}),
    "site:preview": ("GET", "/exports/site_full?site=KMU", None),
    "site:download": ("POST", "/exports/site_full", {"site": "KMU"}),
    "other_site:preview": ("GET", "/exports/site_full?site=NTH", None),
}
NONE = dict.fromkeys(ENDPOINTS, 403)
EXPECTED = {
    "admin": dict.fromkeys(ENDPOINTS, 200),
    "statistician": {**dict.fromkeys(ENDPOINTS, 200), "site:preview": 403, "site:download": 403,
                     "other_site:preview": 403},
    "investigator": {**dict.fromkeys(ENDPOINTS, 200), "pooled:preview": 403, "pooled:download": 403,
                     "other_site:preview": 404},
    "coordinator": NONE,
    "monitor": NONE,
    "coordinator_nth": NONE,
    None: dict.fromkeys(ENDPOINTS, 302),
}


@pytest.mark.parametrize("username", list(EXPECTED), ids=lambda u: u or "anonymous")
def test_export_access_per_role(demo, username):
    client = demo.test_client()
    if username:
        login(client, username)
    for endpoint, (method, url, data) in ENDPOINTS.items():
        response = client.open(url, method=method, data=data)
        assert response.status_code == EXPECTED[username][endpoint], f"{username} {method} {url}"
        if response.status_code == 200 and method == "POST":
            assert response.mimetype == "application/zip"
            assert zipfile.ZipFile(io.BytesIO(response.data)).testzip() is None
        response.close()


def test_every_export_route_is_in_the_access_table(app):
    from tests.test_export_jobs import BACKGROUND_ENDPOINTS  # their matrix is there

    routes = {(rule.rule, method) for rule in app.url_map.iter_rules() if rule.endpoint.startswith("exports.")
              and rule.endpoint not in BACKGROUND_ENDPOINTS for method in rule.methods - {"HEAD", "OPTIONS"}}
    covered = {(url.split("?")[0].replace("pooled_case_series", "<name>").replace("site_full", "<name>"), method)
               for method, url, _ in ENDPOINTS.values()}
    assert routes == covered


def test_pooled_profile_needs_no_site_and_site_profile_needs_one(as_user):
    assert as_user("statistician").get("/exports/pooled_case_series?site=KMU").status_code == 400
    assert as_user("admin").get("/exports/site_full").status_code == 400
    assert as_user("admin").get("/exports/nonesuch").status_code == 404


def test_a_statistician_never_sees_an_identifier(demo, as_user):
    add_record("KMU", {"enrolment": ENROLMENT})
    db.session.commit()
    client = as_user("statistician")
    pages = [client.get("/"), client.get("/exports"), client.get("/exports/pooled_case_series")]
    download = client.post("/exports/pooled_case_series")
    assert all(p.status_code == 200 for p in [*pages, download])
    assert "/exports" in pages[0].get_data(as_text=True)  # the nav link
    preview = pages[2].get_data(as_text=True)
    assert pseudonyms().subject("KMU-0004") in preview
    archive = zipfile.ZipFile(io.BytesIO(download.data))
    blobs = [p.data for p in pages] + [archive.read(n) for n in archive.namelist()]
    blobs.append(download.headers["Content-Disposition"].encode())
    for secret in [*IDENTIFIERS.values(), "KMU-0001", "KMU-0004"]:
        assert not any(secret.encode() in blob for blob in blobs), secret
    assert "site_full" not in pages[1].get_data(as_text=True)


def test_coordinators_have_no_exports_link(as_user):
    assert 'href="/exports"' not in as_user("coordinator").get("/").get_data(as_text=True)
    assert 'href="/exports"' in as_user("investigator").get("/").get_data(as_text=True)


def test_preview_shows_counts_disclosure_and_first_rows(demo, as_user):
    add_record("NTH", {"enrolment": ENROLMENT})
    db.session.commit()
    page = as_user("admin").get("/exports/pooled_case_series").get_data(as_text=True)
    assert "1 records checked, 3 exempt" in page
    assert "quasi-identifiers of their 1 records are suppressed" in page
    assert pseudonyms().site("KMU") in page and pseudonyms().site("NTH") in page
    assert "[SUPP]" in page and "[NR]" in page


def test_download_is_audited_with_the_file_hashes(demo, as_user):
    response = as_user("statistician").post("/exports/pooled_case_series")
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["exported_by"] == {"username": "statistician", "role": "statistician", "source": "web"}
    event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "export")).one()
    assert (event.username, event.source, event.site_id) == ("statistician", "web", None)
    detail = json.loads(event.new_value)
    assert detail["profile"] == "pooled_case_series" and detail["records"] == 3
    assert detail["rows"] == {"cases": 3, "calcium_exposure": 3, "imaging_followup": 3}
    assert detail["bundle_sha256"] == hashlib.sha256(response.data).hexdigest()
    assert detail["files"] == {name: meta["sha256"] for name, meta in manifest["files"].items()}


def test_cli_export(demo, tmp_path):
    runner = demo.test_cli_runner()
    out = tmp_path / "pooled.zip"
    result = runner.invoke(args=["export", "pooled_case_series", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Exporting 3 records" in result.output and "cases 3" in result.output
    assert zipfile.ZipFile(out).read("csv/cases.csv").count(b"\n") == 4
    event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "export")).one()
    assert (event.username, event.source) == ("cli", "cli")
    assert json.loads(event.new_value)["bundle_sha256"] in result.output

    site = tmp_path / "kmu.zip"
    result = runner.invoke(args=["export", "site_full", "--out", str(site), "--site", "kmu"])
    assert result.exit_code == 0, result.output
    assert b"KMU-0003" in zipfile.ZipFile(site).read("csv/records.csv")
    refusals = [
        (["export", "site_full", "--out", str(tmp_path / "x.zip")], "exports one site: name the site"),
        (["export", "pooled_case_series", "--out", str(tmp_path / "x.zip"), "--site", "KMU"], "pools every site"),
        (["export", "site_full", "--out", str(tmp_path / "x.zip"), "--site", "NOPE"], "No such site."),
        (["export", "nonesuch", "--out", str(tmp_path / "x.zip")], "No such export profile."),
    ]
    for args, message in refusals:
        result = runner.invoke(args=args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "x.zip").exists()
    assert list(tmp_path.glob(".*partial")) == []
