"""Site scoping for every record view: own site allowed, another site's record is a 404,
roles that may only look get 403 on writes, statisticians see no record at all."""

from __future__ import annotations

import pytest

from tests.conftest import login

OWN = "KMU-0001"

ROLES = ["coordinator", "admin", "investigator", "monitor", "coordinator_nth", "statistician", None]
NO_JOB = "0123456789abcdefghijKLMN"  # a well-formed job id that no one started
QUERY = {"instrument": "treatment", "instance": "1", "field": "treatment_type", "text": "Please check source"}


def expect(coordinator, admin, investigator, monitor, nth=404, statistician=403):
    """Expected status per role; anonymous users are always sent to the log-in page."""
    return dict(zip(ROLES, [coordinator, admin, investigator, monitor, nth, statistician, 302], strict=True))


# endpoint: (method, url, form data, expected status per role) for every route behind a log-in.
ENDPOINTS = {
    "dashboard.home": ("GET", "/", None, expect(200, 200, 200, 200, 200, 200)),
    "dashboard.site": ("GET", "/sites/KMU/dashboard", None, expect(200, 200, 200, 200)),
    "dashboard.study": ("GET", "/dashboard/study", None, expect(403, 200, 403, 403, 403, 200)),
    "auth.profile": ("GET", "/profile", None, expect(200, 200, 200, 200, 200, 200)),
    "auth.keepalive": ("POST", "/session/keepalive", {}, expect(200, 200, 200, 200, 200, 200)),
    "records.grid": ("GET", "/sites/KMU/records", None, expect(200, 200, 200, 200)),
    "records.create": ("POST", "/sites/KMU/records", {}, expect(302, 302, 403, 403)),
    "records.record": ("GET", f"/records/{OWN}", None, expect(200, 200, 200, 200)),
    "records.print_sheet": ("GET", f"/records/{OWN}/print", None, expect(200, 200, 200, 200)),
    "records.form:get": ("GET", f"/records/{OWN}/treatment/1", None, expect(200, 200, 200, 200)),
    "records.form:post": ("POST", f"/records/{OWN}/treatment/1",
                          {"treatment_type": "1", "form_status": "2", "version": "1"}, expect(302, 302, 403, 403)),
    "records.form:new": ("GET", f"/records/{OWN}/imaging_followup/new", None, expect(200, 200, 200, 200)),
    "records.delete": ("POST", f"/records/{OWN}/delete", {"reason": "duplicate"}, expect(403, 302, 403, 403)),
    "records.deleted": ("GET", "/records/deleted", None, expect(403, 200, 403, 403, 403)),
    "records.restore": ("POST", f"/records/{OWN}/restore", {"reason": "x"}, expect(404, 404, 404, 404)),
    "review.review_list": ("GET", "/review", None, expect(200, 200, 200, 200, 200)),
    "review.sign": ("GET", f"/records/{OWN}/sign", None, expect(403, 200, 200, 403)),
    "review.unlock": ("POST", f"/records/{OWN}/unlock", {"reason": "x"}, expect(403, 409, 409, 403)),
    "review.raise_": ("POST", f"/records/{OWN}/queries", QUERY, expect(403, 302, 302, 302)),
    "review.query_step": ("POST", f"/records/{OWN}/queries/999/answer", {"text": "x"}, expect(404, 404, 404, 404)),
    "review.site_queries": ("GET", "/sites/KMU/queries", None, expect(200, 200, 200, 200)),
    "review.quality": ("GET", "/sites/KMU/quality", None, expect(200, 200, 200, 200)),
    "auth.api_token": ("POST", "/profile/api-token", {}, expect(200, 200, 200, 200, 200, 200)),
    "auth.totp_setup": ("POST", "/profile/2fa/setup", {}, expect(403, 302, 302, 403, 403, 403)),
    "auth.totp_confirm": ("POST", "/profile/2fa/confirm", {}, expect(422, 422, 422, 422, 422, 422)),
    "auth.totp_disable": ("POST", "/profile/2fa/disable", {}, expect(422, 422, 422, 422, 422, 422)),
    "api.help_page": ("GET", "/api/help", None, expect(200, 200, 200, 200, 200, 200)),
    "analysis.page": ("GET", "/analysis", None, expect(200, 200, 200, 200, 200, 200)),
    "analysis.plot": ("GET", "/analysis/plots/time-to-resolution.svg", None, expect(200, 200, 200, 200, 200, 200)),
    "analysis.summary": ("GET", "/analysis/summary", None, expect(200, 200, 200, 200, 200, 200)),
    "dictionary.page": ("GET", "/admin/dictionary/", None, expect(403, 200, 403, 403, 403)),
    "dictionary.export": ("GET", "/admin/dictionary/export.csv", None, expect(403, 200, 403, 403, 403)),
    "audit.trail": ("GET", "/audit", None, expect(403, 200, 403, 403, 403)),
    "audit.trail_csv": ("GET", "/audit.csv", None, expect(403, 200, 403, 403, 403)),
    "imports.page:get": ("GET", "/imports", None, expect(200, 200, 403, 403, 200)),
    "imports.page:post": ("POST", "/imports", {}, expect(422, 422, 403, 403, 422)),
    "imports.template": ("GET", "/imports/template.csv", None, expect(200, 200, 403, 403, 200)),
    "imports.job": ("GET", f"/imports/jobs/{NO_JOB}", None, expect(404, 404, 403, 403, 404)),
    "imports.job_state": ("GET", f"/imports/jobs/{NO_JOB}/state", None, expect(404, 404, 403, 403, 404)),
}
#: Routes open without a log-in: assets, the log-in pages (password, then the two-factor code,
#: tested in tests/test_totp.py), and the REDCap API, which authenticates each call by token
#: (its role x token matrix is in tests/test_api.py).
PUBLIC = {"static", "bootstrap.static", "auth.login", "auth.login_code", "auth.logout", "api.endpoint", "api.index",
          "api.openapi_json"}
#: Export routes: their role x profile x site matrix lives in tests/test_exports_access.py,
#: the background export's (requester only) in tests/test_export_jobs.py. The synthetic data
#: pages exist only with SYNTHETIC_WEB on: their role matrix, on and off, is in tests/test_synthetic_web.py.
COVERED_ELSEWHERE = {"exports.index", "exports.preview", "exports.download",
                     "exports.start", "exports.job", "exports.job_state", "exports.job_bundle",
                     "synthetic.page", "synthetic.job", "synthetic.job_state"}


@pytest.mark.parametrize("username", ROLES, ids=lambda u: u or "anonymous")
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_record_endpoint_access(demo, username, endpoint):
    client = demo.test_client()
    if username:
        login(client, username)
    method, url, data, expected_by_role = ENDPOINTS[endpoint]
    response = client.open(url, method=method, data=data)
    expected = expected_by_role[username]
    assert response.status_code == expected, f"{username} {method} {url}"
    if username is None:
        assert "/login" in response.headers["Location"]
    if expected == 404:
        assert OWN not in response.get_data(as_text=True)


def test_every_route_is_in_the_access_table(app):
    covered = {name.split(":")[0] for name in ENDPOINTS}
    routes = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert routes - PUBLIC - COVERED_ELSEWHERE - covered == set(), "routes without an access-table entry"


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
