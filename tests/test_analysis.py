"""The case-series analysis: the published series' figures from the page and from the export
bundle's analysis.html, a hand-computed Kaplan-Meier median with censored cases, and what each
role may see (own sites only, `<k` for the statistician, no identifiers or site codes)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from html.parser import HTMLParser
from types import MappingProxyType

import numpy as np
import pandas as pd
import pytest

from app import charts
from app.analysis import data as analysis_data
from app.analysis import services as analysis_services
from app.analysis import tally
from app.analysis.data import case_data_from_rows
from app.analysis.fields import AnalysisDefinitionError, check_definition
from app.analysis.services import Audience, Chart, analyse
from app.analysis.tally import ValueCounts, quantiles
from app.exports.services import COMMAND_LINE
from app.extensions import db
from app.records.services import Submission, delete_record, restore_record, save_form
from app.study import current_study
from tests.exports_support import POOLED, Bundle, add_record, admin, export, job_for, pseudonyms, write_profile

# -- reading the rendered tables back ------------------------------------------------------------


class _Tables(HTMLParser):
    """Every table row as its cell texts, plus the key figures (<dt>/<dd> pairs)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.headers: list[list[str]] = []
        self.figures: dict[str, str] = {}
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_head = False
        self._term: str | None = None
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th", "dt", "dd"):
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._row is not None and self._text is not None:
            self._row.append(" ".join("".join(self._text).split()))
        elif tag == "tr" and self._row is not None:
            (self.headers if self._in_head else self.rows).append(self._row)
            self._row = None
        elif tag == "dt" and self._text is not None:
            self._term = " ".join("".join(self._text).split())
        elif tag == "dd" and self._text is not None and self._term:
            self.figures[self._term] = " ".join("".join(self._text).split())

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


class Page:
    def __init__(self, html: str) -> None:
        self.html = html
        self.parsed = _Tables()
        self.parsed.feed(html)

    @property
    def figures(self) -> dict[str, str]:
        return self.parsed.figures

    def column(self, prefix: str) -> int:
        for header in self.parsed.headers:
            for i, text in enumerate(header):
                if text.startswith(prefix):
                    return i
        raise AssertionError(f"no column {prefix!r} in {self.parsed.headers}")

    def cell(self, heading: str, label: str, column: str) -> str:
        """The cell of row `label` under the variable heading starting with `heading`."""
        index = self.column(column)
        current = ""
        for row in self.parsed.rows:
            if len(row) == 1:
                current = row[0]
            elif current.startswith(heading) and row[0] == label:
                return row[index]
        raise AssertionError(f"no row {label!r} under {heading!r}")


def page_for(client) -> Page:
    response = client.get("/analysis")
    assert response.status_code == 200
    return Page(response.get_data(as_text=True))


def assert_published_series(page: Page, column: str) -> None:
    """The figures the paper reports (shared/reference/seed-case-series.md)."""
    assert page.figures["Cases"] == "3"
    assert page.cell("Sex", "Female", column) == "2 (67%)"
    assert page.cell("Sex", "Male", column) == "1 (33%)"
    assert page.cell("Calcium salt infused", "Calcium gluconate", column) == "3 (100%)"
    assert page.cell("Calcium salt infused", "Calcium chloride", column) == "0"
    assert page.cell("Complete resolution", "Yes", column) == "3 (100%)"
    assert page.figures["Complete resolution"] == "3 of 3"
    assert page.figures["Median time from presentation to complete resolution"] == "28 days"
    assert page.figures["Cases with any complication"] == "0 of 3"
    assert page.cell("Complications", "None", column) == "3 (100%)"
    for complication in ("Scar", "Contracture", "Functional limitation", "Other"):
        assert page.cell("Complications", complication, column) == "0"
    assert page.cell("Treatment given", "None (observation only)", column) == "3 (100%)"
    # What the paper does not give is counted as its code, never as a value.
    assert page.cell("Gestational age at birth, completed weeks", "Not reported (NR)", column) == "3 (100%)"
    assert page.cell("Gestational age at birth, completed weeks", "With a value", column) == "0"
    assert page.cell("Age at presentation", "Median (IQR)", column) == "28 (21 to 28)"
    assert page.cell("Age at presentation", "Range", column) == "14 to 28"


# -- the published cases -------------------------------------------------------------------------


def test_page_reproduces_the_published_series(as_user):
    page = page_for(as_user("admin"))
    assert_published_series(page, "KMU (n = 3)")
    assert page.figures["95% confidence interval of the median"] == "21 to 182"


def test_pooled_export_carries_the_same_analysis(demo, tmp_path):
    bundle = export(tmp_path, "pooled_case_series")
    html = bundle.members["analysis.html"].decode("utf-8")
    page = Page(html)
    site = pseudonyms().site("KMU")
    assert_published_series(page, f"{site} (n = 3)")
    # Listed in the manifest with its hash, like every other file of the bundle.
    assert bundle.manifest["files"]["analysis.html"]["sha256"] == hashlib.sha256(
        bundle.members["analysis.html"]).hexdigest()
    assert "analysis.html" in bundle.members["codebook.html"].decode("utf-8")
    # Self-contained and de-identified: inline plots, no script or outside asset, no site code,
    # record ID or calendar date.
    assert html.count("<svg") == 4 and "<title>Time from presentation to complete resolution</title>" in html
    assert "<script" not in html and "<link" not in html and "src=" not in html
    assert "KMU" not in html and not re.search(r"\b(19|20)\d\d-\d\d-\d\d\b", html)


def test_a_bundle_with_shifted_dates_gives_the_same_analysis(censored, tmp_path):
    """Dates shifted by a secret offset instead of made relative: the bundle holds calendar dates,
    and the censored cases' follow-up times and the imaging days are the same intervals."""
    write_profile(tmp_path / "profiles", "shifted", POOLED.replace(
        "  mode: relative\n  anchor: [infusion_start, extravasation_date, lesion_date]\n", "  mode: shift\n"))
    job_for(tmp_path / "profiles", "shifted").write(tmp_path / "shifted.zip", COMMAND_LINE)
    shifted = Page(Bundle.open(tmp_path / "shifted.zip").members["analysis.html"].decode("utf-8"))
    relative = Page(export(tmp_path, "pooled_case_series").members["analysis.html"].decode("utf-8"))
    assert shifted.figures == relative.figures and shifted.parsed.rows == relative.parsed.rows
    assert shifted.figures["Median time from presentation to complete resolution"] == "30 days"
    assert shifted.cell("Overall", "All cases", "Censored") == "2"
    described = re.compile(r"<desc>([^<]*)</desc>")
    assert described.findall(shifted.html) == described.findall(relative.html)
    assert "5 imaging studies of 5 cases, from day 10 to day 10" in shifted.html


def test_checkbox_counts_agree_between_the_page_and_the_bundle(demo, tmp_path, as_user):
    """A checkbox's options are counted per ticked code, several per case, on the page (stored
    lists) and in the bundle (a 0/1 column per option) alike; nothing ticked is not entered."""
    for ticked in (["1", "2"], ["2"], None):
        outcome = {"complete_resolution": "0"} | ({"complications": ticked} if ticked else {})
        add_record("NTH", {"enrolment": {"case_source": "1", "sex": "2"}, "outcome": outcome})
    db.session.commit()
    shown = page_for(as_user("admin"))
    bundle = Page(export(tmp_path, "pooled_case_series").members["analysis.html"].decode("utf-8"))
    for page in (shown, bundle):
        assert page.cell("Complications", "Scar", "All sites") == "1 (17%)"
        assert page.cell("Complications", "Contracture", "All sites") == "2 (33%)"
        assert page.cell("Complications", "Functional limitation", "All sites") == "0"
        assert page.cell("Complications", "None", "All sites") == "3 (50%)"
        assert page.cell("Complications", "Not entered", "All sites") == "1 (17%)"
        assert page.figures["Cases with any complication"] == "2 of 6"


def test_cases_counted_a_few_at_a_time_give_the_same_analysis(censored, as_user, tmp_path, monkeypatch):
    """The analysis holds a chunk of cases at a time and keeps counts between chunks: chunks of
    three (cases of one site split across chunks, a chunk without imaging) give every table,
    figure and text alternative that one chunk of all ten gives, on the page and in the bundle."""
    for _ in range(2):  # the ninth and tenth cases: in different chunks of three
        add_record("NTH", {"enrolment": {"case_source": "1", "sex": "2"},
                           "outcome": {"complete_resolution": "0", "complications": ["1"]}})
    db.session.commit()
    clients = [as_user(user) for user in ("admin", "statistician")]

    def shown() -> list:
        pages = [page_for(client) for client in clients]
        bundle = Page(export(tmp_path, "pooled_case_series").members["analysis.html"].decode("utf-8"))
        db.session.commit()  # the export's audit entry, as the command line commits it
        described = re.compile(r'alt="([^"]*)"|<desc>([^<]*)</desc>')
        return [(page.parsed.rows, page.parsed.headers, page.figures, described.findall(page.html))
                for page in (*pages, bundle)]

    whole = shown()
    monkeypatch.setattr(analysis_data, "CHUNK_CASES", 3)
    monkeypatch.setattr(analysis_services, "CHUNK_CASES", 3)
    analysis_services._REMEMBERED.clear()
    assert shown() == whole
    assert whole[0][2]["Median time from presentation to complete resolution"] == "30 days"
    assert whole[0][2]["Cases with any complication"] == "2 of 10"


def test_quantiles_from_counts_equal_pandas_on_every_value():
    """Medians and quartiles come from counts per distinct value; they equal pandas' quantiles of
    the values themselves, bit for bit, whatever the count, the ties and the spread."""
    generator = np.random.default_rng(7)
    for size in (1, 2, 3, 4, 5, 10, 101, 1000):
        for spread in (3, 50, 10_000):
            values = generator.integers(0, spread, size) / generator.choice([1, 2, 10])
            expected = pd.Series(values).quantile([0.25, 0.5, 0.75]).tolist()
            counted = ValueCounts()
            for part in np.array_split(values, 3):  # counted in three chunks, as the analysis counts
                counted.add(part)
            assert quantiles(counted, (0.25, 0.5, 0.75)) == expected, (size, spread)


def test_site_full_bundles_have_no_analysis(demo, tmp_path):
    assert "analysis.html" not in export(tmp_path, "site_full", site="KMU").members


# -- censored cases: Kaplan-Meier against a hand computation ------------------------------------


def nth_case(sex: str, presented: str, *, resolved: str | None = None, last_seen: str | None = None,
             drug: str = "1", concentration: str = "10") -> None:
    """A prospective NTH case: resolved on `resolved`, or still unresolved when last seen."""
    outcome = ({"complete_resolution": "1", "clinical_resolution_date": resolved} if resolved
               else {"complete_resolution": "0", "last_followup_date": last_seen})
    add_record("NTH", {
        "enrolment": {"case_source": "1", "sex": sex, "ga_weeks": "38", "birth_weight_g": "3100"},
        "calcium_exposure": [{"drug": drug, "route": "1", "concentration_pct": concentration}],
        "lesion_presentation": {"lesion_date": presented, "nodule_count": "1", "nodule_size_mm": "12"},
        "imaging_followup": [{"imaging_date": "2025-03-11", "imaging_modality": "2", "imaging_calcification": "1",
                              "imaging_size_mm": "9"}],
        "outcome": {**outcome, "complications": ["0"]},
    })


@pytest.fixture
def censored(demo):
    """Five NTH cases, all male: resolved on days 10, 30 and 40, unresolved at 20 and 50 days.

    Kaplan-Meier by hand: S(10) = 4/5 = 0.8; the case censored at 20 leaves 3 at risk;
    S(30) = 0.8 x 2/3 = 0.533; S(40) = 0.533 x 1/2 = 0.267, the first value at or below one
    half: the median is 40 days (the plain median of the resolution times would say 30).
    """
    nth_case("1", "2025-03-01", resolved="2025-03-11")
    nth_case("1", "2025-03-01", last_seen="2025-03-21")
    nth_case("1", "2025-03-01", resolved="2025-03-31", drug="2", concentration="5")
    nth_case("1", "2025-03-01", resolved="2025-04-10")
    nth_case("1", "2025-03-01", last_seen="2025-04-20")
    db.session.commit()
    return demo


def test_kaplan_meier_median_with_censored_cases(censored, as_user):
    page = page_for(as_user("coordinator_nth"))
    assert page.figures["Cases"] == "5"
    assert page.figures["Median time from presentation to complete resolution"] == "40 days"
    assert page.cell("By calcium salt infused", "Calcium gluconate", "Cases") == "4"
    assert page.cell("Overall", "All cases", "Resolved") == "3"
    assert page.cell("Overall", "All cases", "Censored") == "2"
    # Pooled with the three published cases (21, 28, 182 days, all resolved), by hand:
    # S = 7/8 at 10; 20 censored; x5/6 at 21; x4/5 at 28 = 0.583; x3/4 at 30 = 0.4375: median 30.
    assert page_for(as_user("admin")).figures["Median time from presentation to complete resolution"] == "30 days"


def test_kaplan_meier_from_a_dataframe_with_censoring(app):
    """The service on hand-built rows (no database): the same five cases and median."""
    study = current_study()
    cases = [(n, "X") for n in range(5)]
    days = [(10, "1"), (20, "0"), (30, "1"), (40, "1"), (50, "0")]
    forms = []
    for n, (day, resolved) in enumerate(days):
        forms.append((n, "lesion_presentation", 1, {"lesion_date": "2025-01-01"}, {}))
        outcome = {"complete_resolution": resolved}
        if resolved == "1":
            outcome["time_to_resolution_days"] = day
        else:
            outcome["last_followup_date"] = str((pd.Timestamp("2025-01-01") + pd.Timedelta(days=day)).date())
        forms.append((n, "outcome", 1, outcome, {}))
    analysis = analyse(study, [case_data_from_rows(study, cases, forms, ["X"])], Audience())
    figures = dict(analysis.key_figures)
    assert figures["Median time from presentation to complete resolution"] == "40 days"
    assert figures["95% confidence interval of the median"] == "10 to not reached"


# -- who sees what -------------------------------------------------------------------------------


def test_statistician_sees_small_cells_as_below_k_and_no_site_codes(censored, as_user):
    page = page_for(as_user("statistician"))
    html = page.html
    kmu, nth = pseudonyms().site("KMU"), pseudonyms().site("NTH")
    assert page.figures["Cases"] == "8"
    assert page.cell("Sex", "Female", "All sites") == "<3"
    assert page.cell("Sex", "Female", kmu) == "<3"
    assert page.cell("Sex", "Female", nth) == "<3"  # zero is a small cell too
    # Complementary suppression: n = 8 and n = 5 are shown, so a male count beside '<3' females
    # would give the exact number of females away (8 - 6 = 2, 5 - 5 = 0).
    assert page.cell("Sex", "Male", "All sites") == "[c]"
    assert page.cell("Sex", "Male", nth) == "[c]"
    assert page.cell("Sex", "Male", kmu) == "<3"
    assert page.figures["Cases with any complication"] == "<3 of 8"
    assert page.cell("Calcium salt infused", "Calcium chloride", "All sites") == "<3"
    assert page.cell("Birth weight", "Median (IQR)", "All sites") == "3100 (3100 to 3100)"
    # NTH's five weights sit beside '<3' not reported (zero): the five would say it is zero.
    assert page.cell("Birth weight", "With a value", nth) == "[c]"
    assert page.cell("Birth weight", "Median (IQR)", nth) == "[c]"
    # A median of fewer than k cases is itself a small cell.
    assert page.cell("By calcium salt infused", "Calcium chloride", "Cases") == "<3"
    assert page.cell("By calcium salt infused", "Calcium chloride", "Median") == "<3"
    assert "KMU" not in html and "NTH" not in html
    assert not re.search(r"\b(KMU|NTH)-\d{4}\b", html) and not re.search(r"\b20\d\d-\d\d-\d\d\b", html)


def test_admin_sees_exact_numbers_per_site(censored, as_user):
    page = page_for(as_user("admin"))
    assert page.cell("Sex", "Female", "All sites") == "2 (25%)"
    assert page.cell("Sex", "Female", "KMU") == "2 (67%)"
    assert page.cell("Calcium salt infused", "Calcium chloride", "NTH") == "1 (20%)"


def test_coordinator_sees_only_their_site(censored, as_user):
    kmu = page_for(as_user("coordinator"))
    assert kmu.figures["Cases"] == "3" and "NTH" not in kmu.html
    nth = page_for(as_user("coordinator_nth"))
    assert nth.figures["Cases"] == "5"
    assert nth.cell("Sex", "Female", "NTH") == "0"
    assert "KMU" not in nth.html


def test_plots_download_as_svg_and_png_with_a_title(censored, as_user):
    client = as_user("statistician")
    svg = client.get("/analysis/plots/time-to-resolution-by-drug.svg")
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    text = svg.get_data(as_text=True)
    assert "<title>Time to complete resolution by calcium salt infused</title>" in text
    assert 'role="img"' in text and "<desc>" in text
    assert "attachment" in svg.headers["Content-Disposition"]
    png = client.get("/analysis/plots/nodule-size.png")
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert client.get("/analysis/plots/nodule-size.gif").status_code == 404
    assert client.get("/analysis/plots/no-such-plot.svg").status_code == 404


def test_page_embeds_every_plot_with_alt_text(censored, as_user):
    def alts(username: str) -> list[str]:
        html = page_for(as_user(username)).html
        found = re.findall(r'<img class="cb-chart" src="data:image/svg\+xml;base64,[^"]+" alt="([^"]+)"', html)
        assert len(found) == 4 and 'href="/analysis/plots/time-to-resolution.png"' in html
        return found

    # The published cases give no imaging date; the NTH cases were imaged on day 10 at 9 mm.
    assert "nothing to plot yet" in alts("investigator")[3]
    assert alts("coordinator_nth")[3].startswith("5 imaging studies of 5 cases, from day 10 to day 10")


def test_dense_plot_layers_are_one_picture_in_the_svg(censored, as_user, monkeypatch):
    """Past VECTOR_MARKS marks a plot's data layer is embedded as a picture (an SVG of 100,000
    vector marks is tens of megabytes); title, axes and text alternative stay as they were. The
    picture is made whatever the number of marks, so the test lowers the threshold."""
    client = as_user("coordinator_nth")
    vector = client.get("/analysis/plots/nodule-size.svg").get_data(as_text=True)
    assert "<image" not in vector
    monkeypatch.setattr(charts, "VECTOR_MARKS", 1)
    dense = analyse(current_study(), [case_data_from_rows(current_study(), [(n, "X") for n in range(3)], [
        (n, "imaging_followup", i, {"imaging_date": f"2025-03-{10 + i:02}", "imaging_calcification": "1",
                                    "imaging_size_mm": 9 - i}, {})
        for n in range(3) for i in (1, 2)] + [(n, "lesion_presentation", 1, {"lesion_date": "2025-03-01"}, {})
                                               for n in range(3)], ["X"])], Audience())
    svg = dense.chart("nodule-size").svg()
    assert svg.count("<image") == 1  # tracks and markers, adjacent layers, in one picture
    assert re.search(r"<title>[^<]+ at imaging follow-up</title>", svg)
    assert "6 imaging studies of 3 cases, from day 10 to day 11" in svg


def test_imaging_tracks_past_the_limit_are_a_stated_random_choice(app, monkeypatch):
    """Past MAX_TRACKS cases imaged more than once, the plot draws the tracks of a random choice
    of them (the same for the same data) and says so; every study stays a point and the text
    alternative counts them all."""
    monkeypatch.setattr(tally, "MAX_TRACKS", 2)
    study = current_study()
    forms = [(n, "lesion_presentation", 1, {"lesion_date": "2025-03-01"}, {}) for n in range(5)]
    forms += [(n, "imaging_followup", i, {"imaging_date": f"2025-03-{10 + i:02}", "imaging_calcification": "1",
                                          "imaging_size_mm": 9 - i - n}, {}) for n in range(5) for i in (1, 2)]

    def chart() -> Chart:
        return analyse(study, [case_data_from_rows(study, [(n, "X") for n in range(5)], forms, ["X"])],
                       Audience()).chart("nodule-size")

    drawn = chart()
    assert drawn.note == ("Tracks of 2 of the 5 cases imaged more than once are drawn, a random choice; "
                          "every study is a point.")
    assert drawn.alt.startswith("10 imaging studies of 5 cases, from day 10 to day 11")
    lines = drawn.build().axes[0].get_lines()
    assert sum(np.isnan(lines[0].get_xdata())) == 2  # two tracks, each ended by a break
    assert len(lines[1].get_xdata()) == 10  # every (day, size) of the ten studies
    np.testing.assert_array_equal(chart().build().axes[0].get_lines()[0].get_ydata(), lines[0].get_ydata())


def test_navigation_links_the_analysis(as_user):
    assert 'href="/analysis"' in as_user("monitor").get("/").get_data(as_text=True)


def test_definition_without_an_analysed_field_is_refused(app):
    study = current_study()
    fields = {name: f for name, f in study._fields.items() if name != "time_to_resolution_days"}
    with pytest.raises(AnalysisDefinitionError, match="time_to_resolution_days"):
        check_definition(replace(study, _fields=MappingProxyType(fields)))


def test_a_site_without_cases_gets_an_empty_analysis_not_an_error(app):
    study = current_study()
    analysis = analyse(study, [case_data_from_rows(study, [], [], ["RVH"])], Audience())
    figures = dict(analysis.key_figures)
    assert figures["Cases"] == "0" and figures["Median time from presentation to complete resolution"] == "no case"
    assert all(chart.svg().startswith("<svg") for chart in analysis.charts)


def test_suppressed_cells_of_the_bundle_are_counted_as_supp(demo, tmp_path):
    """A prospective case alone in its cell of site, sex and gestational age is suppressed in the
    rows; analysis.html counts those cells under the SUPP code, never as values."""
    add_record("NTH", {"enrolment": {"case_source": "1", "sex": "1", "ga_weeks": "30"},
                       "outcome": {"complete_resolution": "0"}})
    db.session.commit()
    page = Page(export(tmp_path, "pooled_case_series").members["analysis.html"].decode("utf-8"))
    supp = "Suppressed (disclosure control) (SUPP)"
    assert page.column(f"{supp} (n = 1)")
    assert page.cell("Sex", supp, "All sites") == "1 (25%)"
    assert page.cell("Sex", "Male", "All sites") == "1 (25%)"  # the published case 2 only
    assert page.cell("Gestational age at birth, completed weeks", supp, "All sites") == "1 (25%)"


# -- remembered analyses -------------------------------------------------------------------------


def test_analysis_follows_every_change_to_the_data(as_user):
    """The page is remembered per audience until a form, a record or a site of its data changes:
    each kind of change shows up on the next view."""
    client = as_user("coordinator")
    assert page_for(client).figures["Cases"] == "3"
    assert page_for(client).figures["Cases"] == "3"  # remembered: same answer

    record = add_record("KMU", {"enrolment": {"case_source": "1", "sex": "2"}})
    db.session.commit()
    page = page_for(client)
    assert page.figures["Cases"] == "4"
    assert page.cell("Sex", "Female", "KMU (n = 4)") == "3 (75%)"

    save_form_values(record, "enrolment", {"case_source": "1", "sex": "1"})
    assert page_for(client).cell("Sex", "Male", "KMU (n = 4)") == "2 (50%)"

    delete_record(db.session, admin(), record, "entered in error")
    db.session.commit()
    assert page_for(client).figures["Cases"] == "3"
    restore_record(db.session, admin(), record, "not an error after all")
    db.session.commit()
    assert page_for(client).figures["Cases"] == "4"


def save_form_values(record, instrument: str, values: dict[str, str]) -> None:
    save_form(db.session, current_study(), admin(), record, instrument, 1, Submission(values=values, status=0),
              expected_version=None)
    db.session.commit()


def _count(cell: str) -> int:
    return int(cell.split(" ", 1)[0])


def test_no_small_count_can_be_worked_out_from_the_statisticians_tables(censored, as_user):
    """Wherever a total is shown (a column's n over its exclusive rows, a row's pooled cell over
    its sites), the cells hidden from the statistician add up to k or more, or are all of them:
    subtracting the shown cells from the total never yields a small count. Checked against the
    admin's exact numbers of the same tables."""
    k = 3
    study = current_study()
    hidden_marks = {f"<{k}", "[c]"}
    statistician, admin = page_for(as_user("statistician")), page_for(as_user("admin"))
    order = {pseudonyms().site("KMU"): "KMU", pseudonyms().site("NTH"): "NTH", "All sites": "All sites"}
    header = statistician.parsed.headers[0]
    exact_header = admin.parsed.headers[0]
    columns = [(i, exact_header.index(next(h for h in exact_header if h.startswith(order[text.split(" (")[0]]))))
               for i, text in enumerate(header) if text.split(" (")[0] in order]
    by_heading = {(f"{f.label} ({f.units})" if f.units else f.label): f for f in study.iter_fields()}
    blocks: list[tuple[str, list[tuple[list[str], list[str]]]]] = []
    for shown, exact in zip(statistician.parsed.rows, admin.parsed.rows, strict=True):
        if len(shown) == 1:
            blocks.append((shown[0], []))
        elif blocks and shown[0] not in ("Median (IQR)", "Range") and shown[0] == exact[0]:
            blocks[-1][1].append((shown, exact))
    checked = 0

    def protected(cells: list[tuple[str, str]]) -> bool:
        hidden = [_count(exact) for shown, exact in cells if shown in hidden_marks]
        return not hidden or len(hidden) == len(cells) or sum(hidden) >= k

    for heading, rows in blocks:
        field = by_heading.get(heading)
        if field is None or not rows or not all(re.fullmatch(r"\d+( \(\d+%\))?|<3|\[c\]", r[0][i])
                                                for r in rows for i, _ in columns):
            continue  # section headings, and the survival table's medians
        for shown, exact in rows:  # a row's sites beside its pooled cell
            if shown[columns[-1][0]] not in hidden_marks:
                assert protected([(shown[i], exact[j]) for i, j in columns[:-1]]), (heading, shown, exact)
        if field.type != "checkbox":  # a column's exclusive rows under its n
            for i, j in columns:
                if not header[i].endswith(f"(n = <{k})") and "[c]" not in header[i]:
                    assert protected([(shown[i], exact[j]) for shown, exact in rows]), (heading, i, rows)
        checked += 1
    assert checked >= 10
