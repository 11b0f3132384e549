"""The REDCap-compatible API through the test client: shapes, parameters, errors, access.

Every test starts from the demo (sites KMU/NTH/RVH, the demo users, the three published
cases at KMU). Calls are made as the clients make them: form-encoded POSTs to /api/.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from app.api.models import ApiToken
from app.api.tokens import hash_token, issue_token
from app.audit.models import AuditEvent
from app.auth.models import User
from app.extensions import db
from app.records.models import FormInstance, Record
from tests.conftest import login

CASES = ["KMU-0001", "KMU-0002", "KMU-0003"]


def token(username: str) -> str:
    user = db.session.scalar(select(User).where(User.username == username))
    value = issue_token(db.session, user)
    db.session.commit()
    return value


def call(client: Any, tok: str, pairs: list[tuple[str, str]] | None = None, **params: Any) -> Any:
    """POST /api/ form-encoded; `pairs` send a key more than once, or in a given order."""
    body: list[tuple[str, str]] = [("token", tok), *(pairs or [])]
    body += [(key, str(value)) for key, value in params.items()]
    return client.post("/api/", data=urlencode(body), content_type="application/x-www-form-urlencoded",
                       buffered=True)  # read streamed answers whole, so their request context closes


def rows_of(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    if response.mimetype == "application/json":
        return response.get_json()
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def main_rows(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {r["record_id"]: r for r in rows if not r.get("redcap_repeat_instrument")}


@pytest.fixture
def api(demo):
    return demo.test_client()


# --- tokens -----------------------------------------------------------------------------

def test_tokens_are_32_hex_stored_as_hash_and_one_per_user(api):
    first = token("coordinator")
    assert len(first) == 32 and int(first, 16) >= 0 and first == first.upper()
    stored = db.session.scalars(select(ApiToken.token_hash)).all()
    assert stored == [hash_token(first)] and first not in stored
    assert call(api, first.lower(), content="version").status_code == 200  # either case works

    second = token("coordinator")
    refused = call(api, first, content="version", format="json")
    assert refused.status_code == 403 and refused.get_json() == {"error": "You do not have permissions to use the API"}
    assert call(api, second, content="version").get_data(as_text=True) == "14.5.2"
    actions = db.session.scalars(select(AuditEvent.action).where(AuditEvent.action.like("api_token%"))
                                 .order_by(AuditEvent.id)).all()
    assert actions == ["api_token_created", "api_token_revoked", "api_token_created"]

    user = db.session.scalar(select(User).where(User.username == "coordinator"))
    user.active = False
    db.session.commit()
    assert call(api, second, content="version", format="json").status_code == 403


@pytest.mark.parametrize("bad", ["", "abc", "G" * 32, "0" * 31, "0" * 33, "0" * 32])
def test_bad_tokens_are_403_in_every_format(api, bad):
    for fmt, check in (("json", lambda t: json.loads(t) == {"error": "You do not have permissions to use the API"}),
                       ("csv", lambda t: t.startswith("ERROR: ")),
                       ("xml", lambda t: "<error>You do not have permissions to use the API</error>" in t)):
        response = call(api, bad, content="record", format=fmt)
        assert response.status_code == 403 and check(response.get_data(as_text=True))


def test_cli_issues_and_revokes_tokens(api):
    runner = api.application.test_cli_runner()
    result = runner.invoke(args=["users", "api-token", "monitor"])
    assert result.exit_code == 0, result.output
    issued = result.stdout.strip().splitlines()[-1]
    assert len(issued) == 32
    assert call(api, issued, content="version").status_code == 200
    result = runner.invoke(args=["users", "api-token", "monitor", "--revoke"])
    assert "Revoked 1 API token(s) of monitor." in result.output
    assert call(api, issued, content="version").status_code == 403
    result = runner.invoke(args=["users", "api-token", "nobody"])
    assert result.exit_code == 1 and "No user named nobody" in result.output


def test_profile_creates_shows_once_and_revokes(as_user, api):
    client = as_user("investigator")
    assert "You have no API token" in client.get("/profile").get_data(as_text=True)
    page = client.post("/profile/api-token", data={"action": "create"}).get_data(as_text=True)
    shown = page.split('id="new-api-token">')[1][:32]
    assert call(api, shown, content="version").status_code == 200
    again = client.get("/profile").get_data(as_text=True)
    assert shown not in again and "Regenerate token" in again and "Revoke token" in again
    assert client.post("/profile/api-token", data={"action": "revoke"}).status_code == 302
    assert call(api, shown, content="version").status_code == 403


# --- metadata and project contents -------------------------------------------------------

def test_project_metadata_and_field_names(api):
    tok = token("monitor")
    project = call(api, tok, content="project", format="json").get_json()
    assert project["is_longitudinal"] == 0 and project["has_repeating_instruments_or_events"] == 1
    assert project["record_autonumbering_enabled"] == 1
    assert project["missing_data_codes"] == "UNK, Unknown | NR, Not reported | NA, Not applicable | NASK, Not asked"

    metadata = rows_of(call(api, tok, content="metadata", format="csv"))
    assert metadata[0]["field_name"] == "record_id" and metadata[0]["form_name"] == "enrolment"
    sex = next(r for r in metadata if r["field_name"] == "sex")
    assert (sex["field_type"], sex["select_choices_or_calculations"], sex["required_field"]) == (
        "radio", "1, Male | 2, Female | 3, Undetermined", "y")
    dob = next(r for r in metadata if r["field_name"] == "dob")
    assert (dob["text_validation_type_or_show_slider_number"], dob["identifier"]) == ("date_ymd", "y")
    some = rows_of(call(api, tok, [("fields[0]", "sex"), ("forms[0]", "treatment")], content="metadata",
                        format="json"))
    assert [r["field_name"] for r in some] == ["sex", "treatment_type", "conservative_measures",
                                               "surgical_procedure", "treatment_other"]

    names = rows_of(call(api, tok, content="exportFieldNames", format="json"))
    exported = [r["export_field_name"] for r in names]
    assert exported[0] == "record_id" and "age_presentation_days" not in exported
    assert exported.index("enrolment_complete") == exported.index("ionised_calcium_pre") + 1
    checkbox = rows_of(call(api, tok, content="exportFieldNames", format="csv", field="skin_findings"))
    assert [(r["choice_value"], r["export_field_name"]) for r in checkbox] == [
        *((c, f"skin_findings___{c}") for c in "12345"),
        *((c, f"skin_findings___{c.lower()}") for c in ("UNK", "NR", "NA", "NASK"))]

    assert rows_of(call(api, tok, content="instrument", format="json"))[0] == {
        "instrument_name": "enrolment", "instrument_label": "Enrolment and demographics"}
    assert rows_of(call(api, tok, content="repeatingFormsEvents", format="csv")) == [
        {"form_name": "calcium_exposure", "custom_form_label": ""},
        {"form_name": "imaging_followup", "custom_form_label": ""}]
    assert [d["unique_group_name"] for d in rows_of(call(api, tok, content="dag", format="json"))] == ["kmu", "nth"]


def test_admin_only_contents(api):
    for username, status in (("coordinator", 403), ("statistician", 403), ("admin", 200)):
        tok = token(username)
        for content in ("user", "log"):
            assert call(api, tok, content=content, format="json").status_code == status, (username, content)
    admin = token("admin")
    users = rows_of(call(api, admin, content="user", format="csv"))
    coordinator = next(u for u in users if u["username"] == "coordinator")
    assert (coordinator["data_access_group"], coordinator["api_import"], coordinator["record_delete"]) == (
        "kmu", "1", "0")
    statistician = next(u for u in users if u["username"] == "statistician")
    assert (statistician["data_export"], statistician["api_import"]) == ("2", "0")
    log = rows_of(call(api, admin, content="log", format="json", logtype="record_add"))
    assert [(e["action"], e["record"]) for e in log] == [(f"create_record {r}", r) for r in CASES]
    edits = rows_of(call(api, admin, content="log", format="json", record="KMU-0002", logtype="record_edit"))
    assert {"username": "coordinator", "details": "sex = '1'"}.items() <= next(
        e for e in edits if e["details"].startswith("sex")).items()


def test_classic_project_errors(api):
    tok = token("coordinator")
    for content in ("formEventMapping", "event", "arm", "file"):
        response = call(api, tok, content=content, format="json")
        assert response.status_code == 400 and "error" in response.get_json(), content
    csv_error = call(api, tok, content="formEventMapping", format="csv")
    assert csv_error.status_code == 400 and csv_error.get_data(as_text=True).startswith("ERROR: ")


@pytest.mark.parametrize(("content", "pairs", "named"), [
    ("log", [("record", "\x00")], "record"),  # found by the schema fuzz on PostgreSQL: was a 500
    ("record", [("records[0]", "KMU-0001\x00")], "records[0]"),
    ("record", [("fields\x00", "age")], "fields\\0"),
])
def test_a_nul_character_in_a_parameter_is_a_named_400_on_every_database(api, content, pairs, named):
    """PostgreSQL refuses NUL in text and JSON; the API says which parameter holds one, and reads nothing."""
    response = call(api, token("admin"), pairs, content=content, format="json", action="import")
    assert response.status_code == 400
    assert response.get_json() == {
        "error": f'The parameter "{named}" contains a NUL character (\\0), which no value may hold.'}


# --- record export -------------------------------------------------------------------------

def test_record_export_shape(api):
    rows = rows_of(call(api, token("coordinator"), content="record", format="json", type="flat"))
    assert list(rows[0])[:4] == ["record_id", "redcap_repeat_instrument", "redcap_repeat_instance", "case_source"]
    keys = list(rows[0])
    for form in ("enrolment", "calcium_exposure", "lesion_presentation", "outcome"):
        assert keys.index(f"{form}_complete") > keys.index("record_id")
    assert keys.index("enrolment_complete") == keys.index("ionised_calcium_pre") + 1
    assert all(isinstance(v, str) for row in rows for v in row.values())
    assert [(r["record_id"], r["redcap_repeat_instrument"], r["redcap_repeat_instance"]) for r in rows] == [
        row for label in CASES for row in ((label, "", ""), (label, "calcium_exposure", "1"),
                                            (label, "imaging_followup", "1"))]
    case = rows[0]
    assert (case["dob"], case["initials"], case["skin_findings___2"], case["skin_findings___3"]) == (
        "NR", "NR", "1", "0")
    assert (case["age_presentation_days"], case["literature_case_number"], case["lesion_presentation_complete"]) == (
        "14", "1", "2")
    assert case["drug"] == "" and case["calcium_exposure_complete"] == ""  # on the repeating rows, not here
    exposure = rows[1]
    assert (exposure["drug"], exposure["concentration_pct"], exposure["sex"]) == ("1", "NR", "")


def test_a_form_never_saved_exports_blank_not_zero(api):
    coordinator = token("coordinator")
    created = call(api, coordinator, content="record", format="json", forceAutoNumber="true", returnContent="ids",
                   data=json.dumps([{"record_id": "new", "sex": "1"}]))
    assert created.get_json() == ["KMU-0004"]
    row = main_rows(rows_of(call(api, coordinator, content="record", format="csv", records="KMU-0004")))["KMU-0004"]
    assert (row["sex"], row["enrolment_complete"]) == ("1", "0")
    assert (row["skin_findings___1"], row["skin_findings___nr"], row["lesion_presentation_complete"]) == ("", "", "")


def test_csv_export_keeps_its_header_with_no_rows_and_label_options(api):
    tok = token("coordinator")
    empty = call(api, tok, content="record", format="csv", records="KMU-9999", fields="record_id,sex")
    assert empty.get_data(as_text=True) == "record_id,redcap_repeat_instrument,redcap_repeat_instance,sex\n"

    labelled = call(api, tok, content="record", format="csv", records="KMU-0002", rawOrLabel="label",
                    rawOrLabelHeaders="label", exportCheckboxLabel="true", exportDataAccessGroups="true",
                    forms="lesion_presentation", fields="sex")
    header, main = list(csv.reader(io.StringIO(labelled.get_data(as_text=True))))[:2]
    assert header[:5] == ["Record ID", "Repeat Instrument", "Repeat Instance", "Data Access Group", "Sex"]
    assert "Skin findings (choice=Induration)" in header and header[-1] == "Complete?"
    cells = dict(zip(header, main, strict=True))
    assert (cells["Sex"], cells["Data Access Group"], cells["Complete?"]) == (
        "Male", "Keimyung University Dongsan Hospital, Daegu", "Complete")
    assert (cells["Skin findings (choice=Induration)"], cells["Skin findings (choice=Erythema)"]) == ("Induration", "")
    assert cells["Date the nodule was first noticed"] == "Not reported"
    unchecked = main_rows(rows_of(call(api, tok, content="record", format="json", rawOrLabel="label",
                                       records="KMU-0002", fields="skin_findings")))
    assert unchecked["KMU-0002"]["skin_findings___1"] == "Unchecked"


@pytest.mark.parametrize("style", [
    [("fields[0]", "sex"), ("fields[1]", "ga_weeks"), ("records[0]", "KMU-0003"), ("records[1]", "KMU-0001")],
    [("fields[1]", "sex"), ("fields[2]", "ga_weeks"), ("records[1]", "KMU-0003"), ("records[2]", "KMU-0001")],
    [("fields", "sex,ga_weeks"), ("records", "KMU-0003,KMU-0001")],
    [("fields[]", "sex"), ("fields[]", "ga_weeks"), ("records", "KMU-0003"), ("records", "KMU-0001")],
], ids=["pycap", "redcapapi", "redcapr", "brackets"])
def test_list_parameters_in_every_client_style(api, style):
    rows = rows_of(call(api, token("coordinator"), style, content="record", format="json"))
    assert [list(r) for r in rows] == [["record_id", "redcap_repeat_instrument", "redcap_repeat_instance", "sex",
                                        "ga_weeks"]] * 2
    assert [r["record_id"] for r in rows] == ["KMU-0001", "KMU-0003"]


@pytest.mark.parametrize(("value", "expected"), [("True", True), ("true", True), ("1", True), ("False", False),
                                                 ("false", False), ("0", False)])
def test_booleans_in_every_spelling(api, value, expected):
    rows = rows_of(call(api, token("coordinator"), content="record", format="json", fields="record_id",
                        exportDataAccessGroups=value, eventName="unique"))
    assert ("redcap_data_access_group" in rows[0]) is expected
    if expected:
        assert {r["redcap_data_access_group"] for r in rows} == {"kmu"}


def test_filter_logic_and_date_range(api):
    tok = token("coordinator")
    females = rows_of(call(api, tok, content="record", format="json", filterLogic="[sex] = '2'", fields="sex"))
    assert [r["record_id"] for r in females] == ["KMU-0001", "KMU-0003"]
    coded = rows_of(call(api, tok, content="record", format="json", fields="record_id",
                         filterLogic="isblankormissingcode([dob]) and [skin_findings(2)] = '1'"))
    assert [r["record_id"] for r in coded] == CASES
    far = rows_of(call(api, tok, content="record", format="json", fields="record_id",
                       dateRangeBegin="2999-01-01 00:00:00"))
    assert far == []
    since = rows_of(call(api, tok, content="record", format="json", fields="record_id",
                         dateRangeBegin="2000-01-01 00:00:00", dateRangeEnd="2999-12-31 23:59:59"))
    assert len(since) == 3
    for bad in ({"filterLogic": "[sex] = "}, {"filterLogic": "[nope] = '1'"}, {"dateRangeBegin": "yesterday"},
                {"fields": "sex,nope"}, {"forms": "nope"}, {"rawOrLabel": "both"}, {"exportDataAccessGroups": "maybe"},
                {"type": "eav"}):
        response = call(api, tok, content="record", format="json", **bad)
        assert response.status_code == 400 and "error" in response.get_json(), bad


def test_records_are_scoped_to_the_tokens_sites(api):
    assert rows_of(call(api, token("coordinator_nth"), content="record", format="json")) == []
    assert len(main_rows(rows_of(call(api, token("monitor"), content="record", format="json")))) == 3
    refused = call(api, token("coordinator_nth"), content="record", format="json",
                   data=json.dumps([{"record_id": "KMU-0001", "sex": "1"}]))
    assert refused.status_code == 400 and "KMU-0001" in refused.get_json()["error"]
    assert "does not exist" in refused.get_json()["error"]


def test_statistician_gets_deidentified_data_only(api):
    tok = token("statistician")
    rows = rows_of(call(api, tok, content="record", format="csv"))
    assert len(main_rows(rows)) == 3
    for removed in ("initials", "hospital_number", "dob", "nicu_admission_date", "literature_doi", "outcome_notes"):
        assert removed not in rows[0]
    assert rows[0]["sex"] == "2" and rows[0]["age_presentation_days"] == "14"
    assert list(rows_of(call(api, tok, content="record", format="json", fields="dob,sex"))[0]) == [
        "record_id", "redcap_repeat_instrument", "redcap_repeat_instance", "sex"]
    oracle = call(api, tok, content="record", format="json", filterLogic="[dob] = '2019-01-01'")
    assert oracle.status_code == 403
    write = call(api, tok, content="record", format="json", data=json.dumps([{"record_id": "KMU-0001", "sex": "1"}]))
    assert write.status_code == 403


# --- record import ---------------------------------------------------------------------------

def snapshot() -> tuple[int, int, list[Any]]:
    db.session.expire_all()
    return (db.session.scalar(select(func.count()).select_from(AuditEvent)),
            db.session.scalar(select(func.count()).select_from(Record)),
            sorted((f.record_id, f.instrument, f.instance, f.data, f.missing, f.status, f.version)
                   for f in db.session.scalars(select(FormInstance))))


def test_import_is_all_or_nothing_with_redcap_style_errors(api):
    tok = token("coordinator")
    before = snapshot()
    payload = [
        {"record_id": "KMU-0001", "ga_weeks": "33", "sex": "2"},
        {"record_id": "KMU-0002", "ga_weeks": "99", "sex": "7"},
        {"record_id": "KMU-0003", "redcap_repeat_instrument": "imaging_followup", "redcap_repeat_instance": "1",
         "imaging_size_mm": "abc"},
        {"record_id": "KMU-0003", "skin_findings___2": "yes"},
    ]
    response = call(api, tok, content="record", format="json", data=json.dumps(payload), reason="Re-checked")
    assert response.status_code == 400
    lines = list(csv.reader(io.StringIO(response.get_json()["error"])))
    assert sorted(line[:3] for line in lines) == [["KMU-0002", "ga_weeks", "99"], ["KMU-0002", "sex", "7"],
                                                 ["KMU-0003", "imaging_size_mm", "abc"],
                                                 ["KMU-0003", "skin_findings___2", "yes"]]
    assert "at most 45" in next(line[3] for line in lines if line[1] == "ga_weeks")
    assert snapshot() == before  # KMU-0001's good row was rolled back with the rest

    as_csv = call(api, tok, content="record", format="csv", returnFormat="csv",
                  data="record_id,ga_weeks\nKMU-0002,99\n")
    assert as_csv.status_code == 400 and as_csv.get_data(as_text=True).startswith('ERROR: "KMU-0002","ga_weeks","99"')


def test_import_goes_through_the_write_path(api):
    tok = token("coordinator")
    response = call(api, tok, content="record", format="csv", returnContent="ids", returnFormat="csv",
                    data="record_id,ga_weeks,serum_calcium_pre\nKMU-0002,33,UNK\n", reason="Chart re-read")
    assert response.get_data(as_text=True) == "id\nKMU-0002\n"
    rows = db.session.scalars(select(AuditEvent).where(AuditEvent.record_label == "KMU-0002",
                                                       AuditEvent.field.in_(["ga_weeks", "serum_calcium_pre"]))
                              .order_by(AuditEvent.id.desc()).limit(2)).all()
    assert {(r.field, r.new_value, r.source, r.reason, r.username) for r in rows} == {
        ("ga_weeks", "33", "api", "Chart re-read", "coordinator"),
        ("serum_calcium_pre", '{"missing":"UNK"}', "api", "Chart re-read", "coordinator")}
    exported = main_rows(rows_of(call(api, tok, content="record", format="json", records="KMU-0002",
                                      fields="ga_weeks,serum_calcium_pre")))["KMU-0002"]
    assert (exported["ga_weeks"], exported["serum_calcium_pre"]) == ("33", "UNK")

    no_reason = call(api, tok, content="record", format="json", data=json.dumps([{"record_id": "KMU-0002",
                                                                                  "ga_weeks": "34"}]))
    assert no_reason.status_code == 400 and "parameter 'reason'" in no_reason.get_json()["error"]
    unchanged = call(api, tok, content="record", format="json", data=json.dumps([{"record_id": "KMU-0002",
                                                                                  "ga_weeks": "33"}]))
    assert unchanged.get_json() == {"count": 1}  # the same value again changes nothing, so needs no reason


def test_checkboxes_missing_codes_overwrite_and_date_formats(api):
    tok = token("coordinator")
    new = call(api, tok, content="record", format="json", forceAutoNumber="1", returnContent="ids",
               data=json.dumps([{"record_id": "x", "sex": "1", "skin_findings___1": "1", "skin_findings___3": "1",
                                 "ulcer_size_mm": "4", "lesion_date": "03/04/2024", "dob": "NR"}]),
               dateFormat="MDY").get_json()
    assert new == ["KMU-0004"]

    def row() -> dict[str, str]:
        return main_rows(rows_of(call(api, tok, content="record", format="json", records="KMU-0004")))["KMU-0004"]

    first = row()
    assert (first["skin_findings___1"], first["skin_findings___3"], first["ulcer_size_mm"]) == ("1", "1", "4")
    assert (first["lesion_date"], first["dob"], first["sex"]) == ("2024-03-04", "NR", "1")
    # Unticking option 3 hides the ulcer size (branching) and clears it, as on the web form.
    call(api, tok, content="record", format="json", data=json.dumps([{"record_id": "KMU-0004",
                                                                      "skin_findings___3": "0"}]))
    assert (row()["skin_findings___1"], row()["skin_findings___3"], row()["ulcer_size_mm"]) == ("1", "0", "")
    # A missing code for a checkbox is its own column.
    call(api, tok, content="record", format="json", data=json.dumps([{"record_id": "KMU-0004",
                                                                      "skin_findings___unk": "1"}]))
    assert (row()["skin_findings___1"], row()["skin_findings___unk"]) == ("0", "1")
    # normal ignores blanks; overwrite erases.
    call(api, tok, content="record", format="json", data=json.dumps([{"record_id": "KMU-0004", "sex": ""}]))
    assert row()["sex"] == "1"
    call(api, tok, content="record", format="json", overwriteBehavior="overwrite",
         data=json.dumps([{"record_id": "KMU-0004", "sex": "", "dob": ""}]))
    assert (row()["sex"], row()["dob"]) == ("", "")
    dmy = call(api, tok, content="record", format="json", dateFormat="DMY",
               data=json.dumps([{"record_id": "KMU-0004", "lesion_date": "03/04/2024"}]))
    assert dmy.status_code == 200 and row()["lesion_date"] == "2024-04-03"


def test_repeating_instances_and_auto_numbering_sites(api):
    admin = token("admin")
    no_site = call(api, admin, content="record", format="json", forceAutoNumber="true",
                   data=json.dumps([{"record_id": "1", "sex": "1"}]))
    assert no_site.status_code == 400 and "redcap_data_access_group" in no_site.get_json()["error"]
    payload = [
        {"record_id": "1", "redcap_data_access_group": "nth", "sex": "2"},
        {"record_id": "1", "redcap_repeat_instrument": "imaging_followup", "redcap_repeat_instance": "1",
         "imaging_modality": "2", "imaging_calcification": "1", "imaging_size_mm": "5"},
        {"record_id": "1", "redcap_repeat_instrument": "imaging_followup", "redcap_repeat_instance": "new",
         "imaging_modality": "1", "imaging_calcification": "0"},
        {"record_id": "2", "redcap_data_access_group": "rvh", "sex": "1"},
    ]
    response = call(api, admin, content="record", format="json", forceAutoNumber="True",
                    returnContent="auto_ids", returnFormat="csv", data=json.dumps(payload))
    assert response.get_data(as_text=True) == "id,original_id\nNTH-0001,1\nRVH-0001,2\n"
    rows = rows_of(call(api, admin, content="record", format="json", records="NTH-0001",
                        forms="imaging_followup", exportDataAccessGroups="true"))
    assert [(r["redcap_repeat_instrument"], r["redcap_repeat_instance"], r["imaging_size_mm"],
             r["redcap_data_access_group"]) for r in rows] == [
        ("", "", "", "nth"), ("imaging_followup", "1", "5", "nth"), ("imaging_followup", "2", "", "nth")]

    misplaced = call(api, admin, content="record", format="json", data=json.dumps([
        {"record_id": "NTH-0001", "imaging_modality": "1"},
        {"record_id": "NTH-0001", "redcap_repeat_instrument": "imaging_followup", "redcap_repeat_instance": "1",
         "sex": "1"},
        {"record_id": "NTH-0001", "redcap_repeat_instrument": "enrolment", "sex": "1"},
        {"record_id": "NTH-0001", "redcap_data_access_group": "kmu"},
    ]))
    error = misplaced.get_json()["error"]
    for expected in ('"imaging_modality","1","This field is on the repeating instrument',
                     '"sex","1","This field is not on \'imaging_followup\'',
                     '"redcap_repeat_instrument","enrolment"', '"redcap_data_access_group","kmu"'):
        assert expected in error
    coordinator = token("coordinator")
    elsewhere = call(api, coordinator, content="record", format="json", forceAutoNumber="true",
                     data=json.dumps([{"record_id": "1", "redcap_data_access_group": "nth", "sex": "1"}]))
    assert elsewhere.status_code == 400 and "cannot create records" in elsewhere.get_json()["error"]


@pytest.mark.parametrize(("fmt", "data", "message"), [
    ("json", '{"record_id": "KMU-0001"}', "must be a list of records"),
    ("json", '"KMU-0001"', "must be a list of records"),
    ("json", "[]", "no records"),
    ("json", "[1, 2]", "must be a list of records"),
    ("json", '[{"record_id": "KMU-0001", "sex": ["1"]}]', "text or a number"),
    ("json", "{not json", "not valid JSON"),
    ("json", "", "missing or empty"),
    ("csv", "record_id,sex\n", "no records"),
    ("csv", "record_id,sex\nKMU-0001,1,2\n", "more values than the header"),
    ("csv", "record_id,sex,sex\nKMU-0001,1,2\n", "twice"),
    ("csv", "sex\n1\n", "record ID field"),
    ("json", '[{"record_id": "KMU-0001", "bogus": "1", "age_presentation_days": "3"}]', "bogus"),
    ("json", '[{"record_id": "KMU-0001", "redcap_event_name": "baseline_arm_1"}]', "redcap_event_name"),
    ("json", '[{"record_id": "", "sex": "1"}]', "no record ID"),
    ("json", '[{"record_id": "KMU-0001", "enrolment_complete": "3"}]', "form status"),
    ("xml", "<records/>", "XML is not supported"),
])
def test_payloads_that_are_not_records_are_errors(api, fmt, data, message):
    before = snapshot()
    response = call(api, token("coordinator"), content="record", format=fmt, returnFormat="json", data=data)
    assert response.status_code == 400 and message in response.get_json()["error"]
    assert snapshot()[1:] == before[1:]


# --- delete and robustness ---------------------------------------------------------------------

def test_delete_is_admin_only_all_or_nothing_and_soft(api):
    coordinator, admin = token("coordinator"), token("admin")
    assert call(api, coordinator, content="record", action="delete", records="KMU-0001",
                returnFormat="json").status_code == 403
    missing = call(api, admin, [("records[0]", "KMU-0001"), ("records[1]", "KMU-0404")], content="record",
                   action="delete", returnFormat="json")
    assert missing.status_code == 400 and "KMU-0404" in missing.get_json()["error"]
    partial = call(api, admin, content="record", action="delete", records="KMU-0001", instrument="outcome",
                   returnFormat="json")
    assert partial.status_code == 400
    assert db.session.scalar(select(func.count()).select_from(Record).where(Record.deleted_at.is_not(None))) == 0
    deleted = call(api, admin, content="record", action="delete", records="KMU-0001,KMU-0003", returnFormat="json",
                   reason="Duplicate entry")
    assert deleted.get_json() == 2
    assert list(main_rows(rows_of(call(api, coordinator, content="record", format="json")))) == ["KMU-0002"]
    db.session.expire_all()
    record = db.session.scalar(select(Record).where(Record.label == "KMU-0003"))
    assert record.deleted_at is not None and record.deleted_reason == "Duplicate entry"
    assert db.session.scalar(select(func.count()).select_from(FormInstance).where(
        FormInstance.record_id == record.id)) == 6  # nothing erased
    audit = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "delete_record",
                                                       AuditEvent.record_label == "KMU-0003"))
    assert (audit.username, audit.source) == ("admin", "api")


@pytest.mark.parametrize("params", [
    {}, {"content": ""}, {"content": "nope"}, {"content": "record", "format": "pdf"},
    {"content": "metadata", "format": "json", "data": "[]"}, {"content": "record", "format": "json",
                                                              "returnContent": "everything", "data": "[]"},
    {"content": "exportFieldNames", "field": "nope"},
    {"content": "log", "logtype": "page_view"}, {"content": "record", "format": "json", "overwriteBehavior": "x",
                                                 "data": "[{}]"},
    {"content": "record", "format": "json", "dateFormat": "YDM", "data": "[{}]"},
])
def test_malformed_calls_are_4xx_with_an_error_body_never_500(api, params):
    response = call(api, token("admin"), returnFormat="json", **params)
    assert 400 <= response.status_code < 500, params
    assert "error" in response.get_json()


def test_oversized_payload_is_a_redcap_error(api):
    api.application.config["MAX_CONTENT_LENGTH"] = 1000
    response = call(api, token("admin"), content="record", format="json", data="x" * 5000)
    assert response.status_code == 413 and "error" in response.get_json()


def test_export_is_audited(api):
    call(api, token("statistician"), content="record", format="csv")
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "export_records"))
    assert (event.username, event.source) == ("statistician", "api") and "de-identified" in event.reason


def test_openapi_and_help_page(api, as_user):
    spec = api.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.") and "/api/" in spec["paths"]
    schema = spec["paths"]["/api/"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    from app.api.handlers import CONTENTS

    assert schema["properties"]["content"]["enum"] == list(CONTENTS)
    assert api.get("/api/").status_code == 302
    page = as_user("coordinator").get("/api/help")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "http://localhost/api/" in text and "exportFieldNames" in text


# endpoint: (method, url, status for coordinator, admin, investigator, monitor, coordinator_nth, statistician,
# anonymous): the pages this package adds, checked like tests/test_access.py checks the others.
PAGES = {
    "auth.api_token": ("POST", "/profile/api-token", (200, 200, 200, 200, 200, 200, 302)),
    "api.help_page": ("GET", "/api/help", (200, 200, 200, 200, 200, 200, 302)),
    "api.index": ("GET", "/api/", (302,) * 7),
    "api.openapi_json": ("GET", "/api/openapi.json", (200,) * 7),
    "api.endpoint": ("POST", "/api/", (403,) * 7),  # a token, never the session, authenticates
    "dictionary.page": ("GET", "/admin/dictionary/", (403, 200, 403, 403, 403, 403, 302)),
    "dictionary.export": ("GET", "/admin/dictionary/export.csv", (403, 200, 403, 403, 403, 403, 302)),
}
ROLES = ["coordinator", "admin", "investigator", "monitor", "coordinator_nth", "statistician", None]


def test_every_page_of_the_package_is_in_the_access_table(app):
    routes = {rule.endpoint for rule in app.url_map.iter_rules()}
    ours = {r for r in routes if r.startswith(("api.", "dictionary.")) or r == "auth.api_token"}
    assert ours == set(PAGES)


@pytest.mark.parametrize("username", ROLES, ids=lambda u: u or "anonymous")
def test_page_access_by_role(demo, username):
    client = demo.test_client()
    if username:
        login(client, username)
    for endpoint, (method, url, statuses) in PAGES.items():
        expected = statuses[ROLES.index(username)]
        assert client.open(url, method=method).status_code == expected, (username, endpoint)
