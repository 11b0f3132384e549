"""Site and study dashboards: counts on the demo site and on records entered through the write
path, links that lead to lists showing the same count, site scoping, the statistician's
de-identified view (pseudonyms, '<k'), the accessible chart, and a constant statement count."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from flask import Flask, current_app
from flask.testing import FlaskClient
from sqlalchemy import select

from app.auth.models import Site, StudyRole, User
from app.auth.services import create_user
from app.dashboard import completeness
from app.dashboard.services import site_dashboards
from app.exports.pseudonyms import Pseudonymiser, load_key
from app.extensions import db
from app.records.fingerprints import RememberedResults
from app.records.models import Record
from app.records.quality import site_report
from app.records.services import Actor, Submission, create_record, save_form
from app.review.services import raise_query
from app.study import current_study
from tests.conftest import login
from tests.test_statement_counts import page_statements, seed

SVG = re.compile(r"<svg.*?</svg>", re.S)


def metric(html: str, name: str) -> str:
    """The text of a dashboard number (`data-metric` card or row), links stripped."""
    match = re.search(rf'data-metric="{name}"[^>]*>(.*?)</(?:p|tr)>', html, re.S)
    assert match, f"no metric {name}"
    return re.sub(r"<[^>]+>|\s+", " ", match.group(1)).strip()


def cell(html: str, form: str, status: str) -> tuple[str, str | None]:
    """(number, link) of one cell of the site dashboard's completeness table."""
    row = re.search(rf'<tr data-form="{form}">(.*?)</tr>', html, re.S)
    assert row, form
    match = re.search(rf'<td data-(?:status|share)="{status}">(?:<a href="([^"]+)">)?([^<]*)', row.group(1))
    assert match, (form, status)
    return match.group(2).strip(), match.group(1) and match.group(1).replace("&amp;", "&")


def grid_total(client: FlaskClient, url: str) -> int:
    html = client.get(url).get_data(as_text=True)
    match = re.search(r"<p class=\"small text-body-secondary\">(\d+) records?", html)
    assert match, url
    return int(match.group(1))


def test_demo_site_dashboard_counts_and_links(as_user):
    client = as_user("coordinator")
    html = client.get("/sites/KMU/dashboard").get_data(as_text=True)
    assert metric(html, "records") == "3"
    assert metric(html, "open-queries") == "0"
    assert metric(html, "awaiting-signature") == "3"  # the published cases are Complete, unsigned
    assert metric(html, "rule-hits") == "0"
    for form in (i.name for i in current_study().instruments):
        number, link = cell(html, form, "complete")
        assert number == "3" and grid_total(client, link) == 3
        assert re.search(rf'<tr data-form="{form}">.*?<td data-share="complete">100%</td>', html, re.S)
        assert cell(html, form, "none")[0] == "0"
    # Enrolment: 10 required fields; each published case hides 'other indication' (branching).
    assert re.search(r'data-form="enrolment">.*?100% <span[^>]*>\(27 of 27 in 3 forms\)', html, re.S)
    assert 'href="/sites/KMU/records"' in html and 'href="/sites/KMU/quality"' in html
    assert 'href="/sites/KMU/queries?status=open"' in html
    assert 'href="/review' not in html.split('id="m-signature"')[1].split("</section>")[0]  # coordinators do not sign


def test_chart_is_inline_accessible_svg(as_user):
    html = as_user("monitor").get("/sites/KMU/dashboard").get_data(as_text=True)
    svg = SVG.search(html)
    assert svg and 'role="img"' in svg.group(0)[:600]
    assert "<title>Records enrolled at KMU</title>" in svg.group(0)
    assert re.search(r"<desc>Cumulative records at KMU by month: \d{4}-\d{2}: 3\.</desc>", svg.group(0))


def test_other_site_dashboard_is_404(as_user):
    assert as_user("coordinator_nth").get("/sites/KMU/dashboard").status_code == 404
    assert as_user("monitor").get("/review?site=KMU").status_code == 404  # monitors review no site
    assert as_user("coordinator").get("/sites/NTH/dashboard").status_code == 404
    assert as_user("coordinator").get("/sites/NOPE/dashboard").status_code == 404
    assert as_user("statistician").get("/sites/KMU/dashboard").status_code == 403
    assert as_user("investigator").get("/dashboard/study").status_code == 403


def _entered_record(admin: User) -> str:
    """A new KMU record through the write path: enrolment Incomplete with three required
    fields, a gestational age the rules flag (warning confirmed), and an open query."""
    study = current_study()
    site = db.session.scalar(select(Site).where(Site.code == "KMU"))
    record = create_record(db.session, Actor(admin), site)
    save_form(db.session, study, Actor(admin), record, "enrolment", 1,
              Submission(values={"case_source": "1", "sex": "2", "ga_weeks": "45"}, status=0),
              expected_version=0, confirm_warnings=True)
    raise_query(db.session, study, Actor(admin), record, "enrolment", 1, "sex", "Please check the source.")
    db.session.commit()
    return record.label


def test_counts_follow_the_write_path_and_links_show_the_same_lists(as_user):
    admin = db.session.scalar(select(User).where(User.username == "admin"))
    label = _entered_record(admin)
    client = as_user("investigator")
    html = client.get("/sites/KMU/dashboard").get_data(as_text=True)
    assert metric(html, "records") == "4"
    assert metric(html, "open-queries") == "1"
    assert metric(html, "awaiting-signature") == "3"  # the new record is not Complete
    assert metric(html, "rule-hits") == "1"
    # 8 of the 10 required enrolment fields are visible for an own case (no DOI, no 'other
    # indication'); 3 are filled: 27 + 3 of 27 + 8.
    assert re.search(r'data-form="enrolment">.*?86% <span[^>]*>\(30 of 35 in 4 forms\)', html, re.S)
    assert cell(html, "enrolment", "incomplete")[0] == "1"
    assert re.search(r'data-form="enrolment">.*?<td data-share="complete">75%</td>', html, re.S)

    number, link = cell(html, "enrolment", "incomplete")
    grid = client.get(link).get_data(as_text=True)
    assert grid_total(client, link) == int(number) == 1 and f">{label}<" in grid
    number, link = cell(html, "calcium_exposure", "none")
    assert grid_total(client, link) == int(number) == 1
    number, link = cell(html, "calcium_exposure", "complete")
    assert grid_total(client, link) == int(number) == 3
    queries = client.get("/sites/KMU/queries?status=open").get_data(as_text=True)
    assert queries.count("Please check the source.") == 1
    quality = client.get("/sites/KMU/quality").get_data(as_text=True)
    assert "1 finding." in quality and "Gestational age is outside 22-44 weeks" in quality
    assert 'href="/review?site=KMU">3</a>' in html  # investigators sign: the number links
    review = client.get("/review?site=KMU").get_data(as_text=True)
    assert len(re.findall(r'href="/records/KMU-\d+/sign"', review)) == 3


def test_repeatable_form_counts_its_least_advanced_instance(as_user):
    """A second, Incomplete imaging follow-up moves the record from Complete to Incomplete,
    on the dashboard and in the grid the number links to."""
    admin = db.session.scalar(select(User).where(User.username == "admin"))
    record = db.session.scalar(select(Record).where(Record.label == "KMU-0001"))
    save_form(db.session, current_study(), Actor(admin), record, "imaging_followup", None,
              Submission(values={"imaging_modality": "1"}, status=0), expected_version=None)
    db.session.commit()
    client = as_user("monitor")
    html = client.get("/sites/KMU/dashboard").get_data(as_text=True)
    number, link = cell(html, "imaging_followup", "incomplete")
    grid = client.get(link).get_data(as_text=True)
    assert number == "1" and grid_total(client, link) == 1 and ">KMU-0001<" in grid
    number, link = cell(html, "imaging_followup", "complete")
    assert number == "2" and grid_total(client, link) == 2 and ">KMU-0001<" not in client.get(link).get_data(
        as_text=True)
    assert re.search(r'data-form="imaging_followup">.*?\(\d+ of \d+ in 4 forms\)', html, re.S)


def test_service_rule_hits_match_the_site_report(demo):
    admin = db.session.scalar(select(User).where(User.username == "admin"))
    _entered_record(admin)
    study = current_study()
    site = db.session.scalar(select(Site).where(Site.code == "KMU"))
    [dashboard] = site_dashboards(db.session, study, [site])
    report = [hit.rule.id for hit in site_report(db.session, study, site.id)]
    assert {k: v for k, v in dashboard.rule_hits.items() if v} == {"gestational_age_range": 1} == {
        rule: report.count(rule) for rule in report}


#: Values the data-quality rules flag, saved through the write path (warnings confirmed).
FLAGGED = [
    ("enrolment", {"ga_weeks": "45"}),
    ("enrolment", {"ga_weeks": "39", "birth_weight_g": "1200"}),
    ("lesion_presentation", {"lesion_date": "2000-01-01"}),
    ("lesion_presentation", {"nodule_size_mm": "150"}),
    ("imaging_followup", {"imaging_date": "2000-01-02"}),
    ("enrolment", {"nicu_admission_date": "2000-01-03"}),
]


def test_rule_hits_by_sql_and_by_the_evaluator_match_the_site_report(app, monkeypatch):
    """The rules translated into SQL and the same rules evaluated once per distinct value
    combination (the path for logic the translation does not cover) count what the
    record-by-record site report finds."""
    seed(sites=2, records=20, seed_value=4)
    admin = create_user(db.session, "rules", "Rule Admin", "counting-findings-pw", study_role=StudyRole.ADMIN)
    study = current_study()
    unlocked = db.session.scalars(select(Record).where(Record.locked_at.is_(None)).order_by(Record.id)).all()
    for record, (form, values) in zip(unlocked[::3], FLAGGED, strict=False):
        save_form(db.session, study, Actor(admin), record, form, 1, Submission(values=values),
                  expected_version=None, reason="Source document re-read")
    db.session.commit()
    sites = list(db.session.scalars(select(Site)))

    def dashboard_hits() -> dict[str, Counter[str]]:
        return {d.site.code: Counter({rule: n for rule, n in d.rule_hits.items() if n})
                for d in site_dashboards(db.session, study, sites)}

    report = {site.code: Counter(hit.rule.id for hit in site_report(db.session, study, site.id)) for site in sites}
    flagged = Counter[str]()
    for counts in report.values():
        flagged.update(counts)
    assert {"gestational_age_range", "birth_weight_implausible", "lesion_before_birth", "nodule_size_range",
            "nicu_admission_before_birth"} <= set(flagged)
    assert dashboard_hits() == report
    monkeypatch.setattr(completeness, "rule_condition", lambda *args: None)
    monkeypatch.setattr(completeness, "_PLANS", completeness._PlanCache())  # plans built without SQL rules
    monkeypatch.setattr(completeness, "_REMEMBERED", RememberedResults(16))  # nothing remembered from above
    assert dashboard_hits() == report


def test_totals_are_remembered_until_a_form_behind_them_changes(as_user, monkeypatch):
    """A second view computes nothing again; a save at one site recomputes that site's totals
    of the saved instrument and of the instruments whose logic reads it, nothing else."""
    study = current_study()
    computed: list[tuple[str, tuple[int, ...]]] = []
    real = completeness.instrument_quality

    def counting(session, study, instrument, site_ids):
        computed.append((instrument.name, tuple(site_ids)))
        return real(session, study, instrument, site_ids)

    monkeypatch.setattr(completeness, "instrument_quality", counting)
    admin = as_user("admin")
    before = admin.get("/dashboard/study").get_data(as_text=True)
    computed.clear()
    assert admin.get("/dashboard/study").get_data(as_text=True) == before
    assert computed == []

    kmu = db.session.scalar(select(Site).where(Site.code == "KMU"))
    record = db.session.scalar(select(Record).where(Record.label == "KMU-0001"))
    user = db.session.scalar(select(User).where(User.username == "admin"))
    save_form(db.session, study, Actor(user), record, "enrolment", 1, Submission(values={"ga_weeks": "45"}),
              expected_version=None, reason="Source document re-read", confirm_warnings=True)
    db.session.commit()
    html = as_user("coordinator").get("/sites/KMU/dashboard").get_data(as_text=True)
    assert metric(html, "rule-hits") == "1"
    readers = {inst.name for inst in study.instruments
               if "enrolment" in completeness._PLANS.get(study, inst).context}
    assert "enrolment" in readers and len(readers) < len(study.instruments)
    assert sorted(computed) == sorted((name, (kmu.id,)) for name in readers)


def test_statistician_sees_pseudonyms_and_masked_counts(as_user):
    html = as_user("statistician").get("/dashboard/study").get_data(as_text=True)
    main = html[html.index("<main"):]
    pseudonyms = Pseudonymiser(load_key(Path(current_app.instance_path)), current_study().id)
    kmu, nth = pseudonyms.site("KMU"), pseudonyms.site("NTH")
    assert f'data-site="{kmu}"' in main and f'data-site="{nth}"' in main
    for code in db.session.scalars(select(Site.code)):
        assert not re.search(rf"\b{code}\b", main), f"site code {code} shown to a statistician"
    assert "KMU-0" not in main and "/sites/" not in main and "/records" not in main
    columns = re.findall(r'data-site="([^"]+)"', main)
    records = re.findall(r"<td>(.*?)</td>", metric_row(main, "records"))
    assert dict(zip(columns, records, strict=True))[kmu] == "3"
    assert all(value == "&lt;3" for column, value in zip(columns, records, strict=True) if column != kmu)
    assert re.findall(r"<td>(.*?)</td>", metric_row(main, "open-queries")) == ["&lt;3"] * 3  # zeros are masked too
    assert "<svg" in main and 'href="/analysis"' in main


def metric_row(html: str, name: str) -> str:
    match = re.search(rf'<tr data-metric="{name}">(.*?)</tr>', html, re.S)
    assert match, name
    return match.group(1)


def test_admin_sees_codes_and_links_on_the_study_dashboard(as_user):
    html = as_user("admin").get("/dashboard/study").get_data(as_text=True)
    assert 'href="/sites/KMU/dashboard">KMU</a>' in html
    assert 'href="/sites/KMU/records">3</a>' in metric_row(html, "records")
    assert re.search(r'<tr data-month="\d{4}-\d{2}"><th scope="row">[^<]+</th>(<td>\d+</td>)+</tr>', html)
    home = as_user("coordinator").get("/").get_data(as_text=True)
    assert 'href="/sites/KMU/dashboard"' in home and 'href="/dashboard/study"' not in home


@pytest.fixture
def admin_client(app: Flask) -> FlaskClient:
    create_user(db.session, "dash", "Dash Admin", "counting-statements-pw", study_role=StudyRole.ADMIN)
    db.session.commit()
    client = app.test_client()
    login(client, "dash", "counting-statements-pw")
    return client


def test_dashboards_run_the_same_statements_for_few_and_many_records(admin_client):
    seed(sites=2, records=4, seed_value=1)
    small = {url: page_statements(admin_client, url) for url in ("/sites/SYN001/dashboard", "/dashboard/study")}
    seed(sites=12, records=12, seed_value=2)
    seed(sites=1, records=30, seed_value=3)
    large = {url: page_statements(admin_client, url) for url in small}
    assert metric(small["/sites/SYN001/dashboard"][1], "records") == "2"
    assert metric(large["/sites/SYN001/dashboard"][1], "records") == "33"
    assert large["/dashboard/study"][1].count('data-site="') == 12
    assert {url: n for url, (n, _) in small.items()} == {url: n for url, (n, _) in large.items()}


def test_the_study_dashboard_loads_the_case_series_summary(as_user):
    """The page itself names the fragment to load (so it never waits for the analysis); the
    fragment is the analysis's key figures, exact for the admin and masked for the statistician."""
    html = as_user("admin").get("/dashboard/study").get_data(as_text=True)
    assert 'data-cb-summary="/analysis/summary"' in html and "js/summary.js" in html
    figures = as_user("admin").get("/analysis/summary").get_data(as_text=True)
    assert re.search(r"<dt[^>]*>Cases</dt><dd[^>]*>3</dd>", figures)
    assert re.search(r"<dt[^>]*>Complete resolution</dt><dd[^>]*>3 of 3</dd>", figures)
    assert "<html" not in figures and 'href="/analysis"' in figures
    masked = as_user("statistician").get("/analysis/summary").get_data(as_text=True)
    assert re.search(r"<dt[^>]*>Cases</dt><dd[^>]*>3</dd>", masked) and "KMU" not in masked
    assert re.search(r"<dt[^>]*>Cases with any complication</dt><dd[^>]*>&lt;3 of 3</dd>", masked)


def test_a_new_process_reads_the_totals_another_computed(as_user, monkeypatch):
    """The totals are kept in the database with their fingerprints: with this process's memory
    emptied (as in a worker that has just started) nothing is computed again and the page is
    the same; with the database's emptied too, everything is."""
    from app.records.fingerprints import forget_all

    computed: list[str] = []
    real = completeness.instrument_quality

    def counting(session, study, instrument, site_ids):
        computed.append(instrument.name)
        return real(session, study, instrument, site_ids)

    monkeypatch.setattr(completeness, "instrument_quality", counting)
    forget_all()  # earlier tests' identical demo data left results in this process, not in this database
    admin = as_user("admin")
    before = admin.get("/dashboard/study").get_data(as_text=True)
    forget_all()
    computed.clear()
    assert admin.get("/dashboard/study").get_data(as_text=True) == before
    assert computed == []
    forget_all(db.session)
    db.session.commit()
    assert admin.get("/dashboard/study").get_data(as_text=True) == before
    assert sorted(computed) == sorted(inst.name for inst in current_study().instruments)
