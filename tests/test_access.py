"""Site scoping for every record view: own site allowed, another site's record is a 404,
roles that may only look get 403 on writes, statisticians see no record at all."""

from __future__ import annotations

import pytest

from tests.conftest import login

OWN = "KMU-0001"

# (method, url, form data) for every endpoint that touches records or sites.
ENDPOINTS = {
    "records.grid": ("GET", "/sites/KMU/records", None),
    "records.create": ("POST", "/sites/KMU/records", {}),
    "records.record": ("GET", f"/records/{OWN}", None),
    "records.form:get": ("GET", f"/records/{OWN}/treatment/1", None),
    "records.form:post": ("POST", f"/records/{OWN}/treatment/1",
                          {"treatment_type": "1", "form_status": "2", "version": "1"}),
    "records.form:new": ("GET", f"/records/{OWN}/imaging_followup/new", None),
}

READ_ONLY = {"records.grid": 200, "records.create": 403, "records.record": 200, "records.form:get": 200,
             "records.form:post": 403, "records.form:new": 200}
FULL = {"records.grid": 200, "records.create": 302, "records.record": 200, "records.form:get": 200,
        "records.form:post": 302, "records.form:new": 200}
EXPECTED = {
    "coordinator": FULL,
    "admin": FULL,
    "investigator": READ_ONLY,
    "monitor": READ_ONLY,
    "coordinator_nth": dict.fromkeys(ENDPOINTS, 404),
    "statistician": dict.fromkeys(ENDPOINTS, 403),
    None: dict.fromkeys(ENDPOINTS, 302),
}


@pytest.mark.parametrize("username", list(EXPECTED), ids=lambda u: u or "anonymous")
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_record_endpoint_access(demo, username, endpoint):
    client = demo.test_client()
    if username:
        login(client, username)
    method, url, data = ENDPOINTS[endpoint]
    response = client.open(url, method=method, data=data)
    expected = EXPECTED[username][endpoint]
    assert response.status_code == expected, f"{username} {method} {url}"
    if username is None:
        assert "/login" in response.headers["Location"]
    if expected == 404:
        assert OWN not in response.get_data(as_text=True)


def test_every_record_route_is_in_the_access_table(app):
    covered = {name.split(":")[0] for name in ENDPOINTS}
    record_routes = {
        rule.endpoint for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("records.")
    }
    assert record_routes == covered


def test_other_site_records_never_listed(as_user):
    client = as_user("coordinator_nth")
    home = client.get("/").get_data(as_text=True)
    assert "KMU" not in home and "NTH" in home
    grid = client.get("/sites/NTH/records").get_data(as_text=True)
    assert "KMU-000" not in grid


def test_monitor_sees_both_sites_on_home(as_user):
    home = as_user("monitor").get("/").get_data(as_text=True)
    assert "(KMU)" in home and "(NTH)" in home and "(RVH)" not in home


def test_search_is_scoped_and_escaped(as_user):
    client = as_user("coordinator")
    page = client.get("/sites/KMU/records?q=0002").get_data(as_text=True)
    assert "/records/KMU-0002" in page and "/records/KMU-0001" not in page
    page = client.get("/sites/KMU/records?q=%25").get_data(as_text=True)
    assert "/records/KMU-0001" not in page and "No records match" in page


def test_statistician_home_explains_exports_only(as_user):
    page = as_user("statistician").get("/").get_data(as_text=True)
    assert "de-identified" in page and "KMU-0001" not in page
