"""Real headless Chromium against a live server: what a coordinator meets while entering data.

Each test keeps a screenshot of its final page under test-artifacts/.
"""

from __future__ import annotations

import re

import pytest

from tests.browser_support import ARTIFACTS, PHONE, axe_violations, login, screenshot, submit

pytestmark = pytest.mark.browser
#: The fixtures chromium, start_server and new_page.
pytest_plugins = ["tests.browser_fixtures"]


def _row(page, field: str):
    return page.locator(f"#row-{field}")


def _type(page, field: str, text: str) -> None:
    """Type into a field key by key, as a person does."""
    page.locator(f"#{field}").press_sequentially(text)


def _choose(page, field: str, label: str) -> None:
    """Pick a radio button or tick a checkbox with the space bar."""
    _row(page, field).get_by_label(label, exact=True).press("Space")


def _complete_and_save(page) -> None:
    page.locator("#form_status").select_option(label="Complete")
    page.get_by_role("button", name="Save and exit").press("Enter")
    page.wait_for_url(re.compile(r"/records/KMU-\d+$"))


def test_branching_shows_and_hides_fields_live(new_page):
    page = new_page()
    login(page, "coordinator")
    page.goto("/records/KMU-0001/calcium_exposure/new")
    other_row = _row(page, "drug_other")
    assert other_row.is_hidden()
    page.get_by_role("radio", name="Other").first.check()
    assert other_row.is_visible()
    page.get_by_role("radio", name="Calcium gluconate").check()
    assert other_row.is_hidden()
    date_row = _row(page, "extravasation_date")
    assert date_row.is_hidden()
    _row(page, "extravasation_recognised").get_by_role("radio", name="Yes").check()
    assert date_row.is_visible()
    screenshot(page, "branching-exposure")


def test_checkbox_branching_calculation_and_missing_codes(new_page):
    page = new_page()
    login(page, "coordinator")
    page.goto("/records/KMU-0002/lesion_presentation/1")
    ulcer = _row(page, "ulcer_size_mm")
    assert ulcer.is_hidden()
    page.get_by_role("checkbox", name="Ulceration").check()
    assert ulcer.is_visible()
    page.get_by_role("checkbox", name="Ulceration").uncheck()
    assert ulcer.is_hidden()
    # The published case has no dates: the age is the reported one, and updates as typed.
    age = page.locator("#age_presentation_days")
    assert age.input_value() == "28"
    page.locator("#age_presentation_reported_days").fill("30")
    assert age.input_value() == "30"
    # Choosing a missing-data code disables the value input.
    page.locator("#nodule_count__missing").select_option("")
    assert page.locator("#nodule_count").is_enabled()
    page.locator("#nodule_count__missing").select_option("UNK")
    assert page.locator("#nodule_count").is_disabled()
    screenshot(page, "branching-lesion")


def test_coordinator_enters_a_full_case_by_keyboard(new_page):
    page = new_page(locale="en-US")
    login(page, "coordinator")
    page.goto("/sites/KMU/records")
    page.get_by_role("button", name="Add a new record").press("Enter")
    page.wait_for_url("**/records/KMU-0004/enrolment/1")

    # Enrolment: a prospective case; the DOI appears only for published cases.
    _choose(page, "case_source", "Prospective (enrolled at this site)")
    assert _row(page, "literature_doi").is_hidden()
    page.locator("#enrolment_date").fill("2024-03-20")
    _type(page, "initials", "JD")
    # Tab order follows the form: a field, its missing-data code, the next field.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "initials__missing"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "hospital_number"
    page.keyboard.type("H-20240301")
    page.locator("#dob").press_sequentially("03012024")  # typed into the date input (mm/dd/yyyy in en-US)
    assert page.locator("#dob").input_value() == "2024-03-01"
    _row(page, "sex").get_by_label("Male", exact=True).focus()
    page.keyboard.press("ArrowDown")  # arrow keys move through a radio group
    assert _row(page, "sex").get_by_label("Female", exact=True).is_checked()
    _type(page, "ga_weeks", "36")
    _type(page, "birth_weight_g", "2450")
    _choose(page, "calcium_indication", "Other")
    _type(page, "calcium_indication_other", "Exchange transfusion")
    page.locator("#ionised_calcium_pre__missing").select_option("UNK")
    _complete_and_save(page)
    assert "Enrolment and demographics saved." in page.get_by_role("alert").first.inner_text()

    # Two calcium exposures (a repeatable form): one recognised extravasation, one other salt.
    for drug, recognised in (("Calcium gluconate", "Yes"), ("Other", "No")):
        page.get_by_role("link", name="Add calcium exposure").press("Enter")
        page.wait_for_url("**/calcium_exposure/new")
        _choose(page, "drug", drug)
        if drug == "Other":
            _type(page, "drug_other", "Calcium glubionate")
        _choose(page, "route", "Intravenous")
        _type(page, "concentration_pct", "10")
        _choose(page, "line_type", "Peripheral intravenous")
        _choose(page, "line_site", "Upper limb")
        _choose(page, "line_side", "Left")
        _choose(page, "extravasation_recognised", recognised)
        if recognised == "Yes":
            page.locator("#extravasation_date").fill("2024-03-03")
        else:
            assert _row(page, "extravasation_date").is_hidden()
        _complete_and_save(page)

    page.goto("/records/KMU-0004/lesion_presentation/1")
    page.locator("#lesion_date").fill("2024-03-29")
    # Both dates known: the age is calculated (and the reported age is not asked).
    assert page.locator("#age_presentation_days").input_value() == "28"
    assert _row(page, "age_presentation_reported_days").is_hidden()
    _type(page, "nodule_count", "2")
    _type(page, "nodule_size_mm", "8")
    _choose(page, "lesion_location", "Upper limb")
    _choose(page, "skin_findings", "Erythema")
    _choose(page, "suspected_infection", "No")
    _choose(page, "initial_xray_done", "Done, calcification seen")
    page.locator("#initial_xray_date").fill("2024-03-29")
    _complete_and_save(page)

    page.get_by_role("link", name="Add imaging follow-up").press("Enter")
    page.locator("#imaging_date").fill("2024-04-15")
    _choose(page, "imaging_modality", "Ultrasound")
    _choose(page, "imaging_calcification", "Yes")
    _type(page, "imaging_size_mm", "6")
    _complete_and_save(page)

    page.goto("/records/KMU-0004/treatment/1")
    _choose(page, "treatment_type", "Conservative")
    _choose(page, "conservative_measures", "Compresses (warm or cold)")
    _complete_and_save(page)

    page.goto("/records/KMU-0004/outcome/1")
    _choose(page, "complete_resolution", "Yes")
    page.locator("#clinical_resolution_date").fill("2024-06-28")
    assert page.locator("#time_to_resolution_days").input_value() == "91"
    _choose(page, "complications", "None")
    _complete_and_save(page)

    forms = page.get_by_role("table").first
    assert forms.locator("text=Complete").count() == 7  # four forms, two exposures, one imaging
    assert forms.get_by_role("link", name=re.compile(r"^#2")).count() == 1
    screenshot(page, "full-case-record")


def test_validation_errors_are_shown_announced_linked_and_fixed(new_page):
    page = new_page()
    login(page, "coordinator")
    page.goto("/sites/KMU/records")
    page.get_by_role("button", name="Add a new record").click()
    page.wait_for_url("**/records/KMU-0004/enrolment/1")
    page.locator("#ga_weeks").fill("thirty")
    page.locator("#birth_weight_g").fill("9000")
    page.locator("#form_status").select_option(label="Complete")
    submit(page, "Save and stay")

    summary = page.locator("#cb-error-summary")
    assert summary.get_attribute("role") == "alert"
    assert page.evaluate("document.activeElement.id") == "cb-error-summary"  # focus moves to the summary
    assert summary.get_by_role("link").count() == 2
    ga = page.locator("#ga_weeks")
    assert ga.input_value() == "thirty"  # what was typed is kept
    assert ga.get_attribute("aria-invalid") == "true"
    assert "ga_weeks-error" in ga.get_attribute("aria-describedby").split()
    assert "whole number" in page.locator("#ga_weeks-error").inner_text()
    summary.get_by_role("link", name=re.compile("^Birth weight")).click()
    assert page.evaluate("document.activeElement.id") == "birth_weight_g"
    page.locator("#birth_weight_g").fill("2900")

    # A data-quality rule warns next to the field while typing, linked to the field.
    ga.fill("45")
    warning = page.locator("#ga_weeks-warning")
    assert warning.is_visible()
    assert warning.inner_text() == "Check: Gestational age is outside 22-44 weeks."
    assert "ga_weeks-warning" in ga.get_attribute("aria-describedby").split()
    ga.fill("44")
    assert warning.is_hidden()
    assert "ga_weeks-warning" not in (ga.get_attribute("aria-describedby") or "").split()
    ga.fill("45")
    submit(page, "Save and stay")
    # Complete needs every required field: each one is listed, linked and marked.
    required = summary.get_by_role("link").all_inner_texts()
    assert "Sex: Required to mark the form Complete: enter a value or a missing-data code." in required
    assert page.locator("#row-sex fieldset").get_attribute("aria-invalid") == "true"
    _choose(page, "case_source", "Retrospective chart review")
    page.locator("#initials").fill("AB")
    page.locator("#hospital_number__missing").select_option("NASK")
    page.locator("#dob").fill("2024-02-02")
    _choose(page, "sex", "Male")
    _choose(page, "calcium_indication", "Hypocalcaemia")
    submit(page, "Save and stay")
    # The server confirms the rule: the coordinator confirms the value and saves again.
    assert "Gestational age is outside 22-44 weeks" in summary.inner_text()
    page.get_by_label("The values are correct (the warnings are recorded)").check()
    submit(page, "Save and stay")
    assert summary.count() == 0
    assert page.get_by_role("alert").first.inner_text() == "Enrolment and demographics saved."
    assert page.locator("#ga_weeks").input_value() == "45"
    assert axe_violations(page) == []
    screenshot(page, "validation-fixed")


def test_unsaved_changes_are_never_lost_silently(new_page):
    page = new_page()
    login(page, "coordinator")
    page.goto("/records/KMU-0001/outcome/1")
    dialogs: list[str] = []

    def answer(accept: bool):
        def handler(dialog):
            dialogs.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()
        return handler

    # Nothing typed yet: leaving asks nothing.
    page.get_by_role("link", name="KMU-0001").click()
    page.wait_for_url("**/records/KMU-0001")
    assert dialogs == []
    page.go_back()

    page.locator("#outcome_notes").fill("Seen again in clinic")
    page.once("dialog", answer(False))
    page.get_by_role("link", name="KMU-0001").click()
    assert "unsaved changes" in dialogs[-1]
    assert page.url.endswith("/records/KMU-0001/outcome/1")
    assert page.locator("#outcome_notes").input_value() == "Seen again in clinic"

    # A refused save (a Complete form needs a reason) is still unsaved: leaving asks too.
    submit(page, "Save and stay")
    assert page.locator("#cb-error-summary").is_visible()
    page.once("dialog", answer(True))
    page.get_by_role("link", name="Home").click()
    page.wait_for_url(re.compile(r"/$"))
    assert len(dialogs) == 2

    # After a successful save nothing asks.
    page.goto("/records/KMU-0001/outcome/1")
    page.locator("#outcome_notes").fill("Seen again in clinic")
    page.locator("#reason_choice").select_option("New source document")
    submit(page, "Save and stay")
    assert "Outcome saved." in page.get_by_role("alert").first.inner_text()
    page.get_by_role("link", name="KMU-0001").click()
    page.wait_for_url("**/records/KMU-0001")
    assert len(dialogs) == 2

    # Other ways out (reload, the address bar, closing the tab) get the browser's own question.
    page.goto("/records/KMU-0001/outcome/1")
    page.locator("#outcome_notes").fill("Typed, never saved")
    screenshot(page, "unsaved-changes")
    with page.expect_event("dialog") as asked:
        page.close(run_before_unload=True)
    assert asked.value.type == "beforeunload"
    asked.value.dismiss()
    assert page.locator("#outcome_notes").input_value() == "Typed, never saved"


def test_conflict_between_two_browsers_keeps_the_typed_values(new_page):
    first, second = new_page(), None
    login(first, "coordinator")
    second = new_page(base_url=first.url.rsplit("/", 1)[0])
    login(second, "admin")
    for page in (first, second):
        page.goto("/records/KMU-0001/treatment/1")

    _choose(first, "treatment_type", "Surgical")
    first.locator("#surgical_procedure").fill("Excision of the nodule")
    first.locator("#reason_choice").select_option("New source document")
    submit(first, "Save and exit")
    first.wait_for_url("**/records/KMU-0001")

    _choose(second, "treatment_type", "Other")
    second.locator("#treatment_other").fill("Topical sodium thiosulfate")
    second.locator("#reason_choice").select_option("Query response")
    submit(second, "Save and stay")
    conflict = second.get_by_role("region", name="Saved by someone else meanwhile")
    assert conflict.is_visible()
    assert "Someone else saved this form" in second.get_by_role("alert").first.inner_text()
    # The second user's values are still in the form, and the table shows both versions.
    assert _row(second, "treatment_type").get_by_label("Other", exact=True).is_checked()
    assert second.locator("#treatment_other").input_value() == "Topical sodium thiosulfate"
    rows = conflict.locator("tbody tr")
    assert rows.filter(has_text="Treatment given for the calcinosis").inner_text().split("\t")[1:] == [
        "Surgical", "Other"]
    screenshot(second, "conflict-shown")
    # Saving again replaces the saved values on purpose.
    submit(second, "Save and exit")
    second.wait_for_url("**/records/KMU-0001")
    first.goto("/records/KMU-0001/treatment/1")
    assert _row(first, "treatment_type").get_by_label("Other", exact=True).is_checked()
    assert first.locator("#treatment_other").input_value() == "Topical sodium thiosulfate"
    screenshot(second, "conflict-resolved")


def test_session_timeout_warns_and_lets_the_user_stay(new_page, start_server):
    # An idle limit of 40 s with the warning 36 s before the end: it shows 4 s after a page loads.
    page = new_page(base_url=start_server(SESSION_IDLE_SECONDS=40, SESSION_WARNING_SECONDS=36))
    login(page, "coordinator")
    page.goto("/records/KMU-0001/enrolment/1")
    warning = page.locator("#cb-session-warning")
    assert warning.is_hidden()
    warning.wait_for(state="visible")
    assert "You will be logged out at" in warning.inner_text()
    assert "logged out" in page.locator("#cb-announcer").text_content()  # the live region announces it
    assert page.locator("#cb-announcer").get_attribute("aria-live") == "assertive"
    assert page.evaluate("document.activeElement.id") == "cb-stay"
    with page.expect_response("**/session/keepalive") as response:
        page.keyboard.press("Enter")
    assert response.value.ok
    assert warning.is_hidden()
    assert page.locator("#cb-announcer").text_content() == "You are still logged in."
    page.get_by_role("link", name="KMU-0001").click()
    page.wait_for_url("**/records/KMU-0001")  # still logged in
    screenshot(page, "session-stay")


def test_phone_width_pages_fit_the_screen(new_page):
    page = new_page(viewport=PHONE)
    login(page, "investigator")
    for name, url in (("record", "/records/KMU-0001"), ("form", "/records/KMU-0001/calcium_exposure/1"),
                      ("review", "/review"), ("grid", "/sites/KMU/records")):
        page.goto(url)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{url} scrolls sideways ({width} px)"
        assert axe_violations(page) == [], url
        screenshot(page, f"phone-{name}")
    # The menu collapses behind a button that the keyboard can open.
    page.get_by_role("button", name="Menu").press("Enter")
    assert page.get_by_role("link", name="Review").is_visible()


def test_print_sheet_holds_every_form_and_no_controls(new_page):
    page = new_page()
    login(page, "monitor")
    page.goto("/records/KMU-0001")
    page.get_by_role("link", name="Source-verification sheet (print)").click()
    page.wait_for_url("**/records/KMU-0001/print")
    page.emulate_media(media="print")
    assert page.get_by_role("navigation").first.is_hidden()
    assert page.get_by_role("button", name="Print").is_hidden()
    headings = page.locator(".cb-sheet-form h2").all_inner_texts()
    assert headings[0] == "Enrolment and demographics" and "Calcium exposure #1" in headings
    sheet = page.locator(".cb-sheet").inner_text()
    assert "10.4055/jkoa.2019.54.2.192" in sheet
    assert "NR (Not reported)" in sheet
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280
    screenshot(page, "print-sheet")


# -- a published case by keyboard alone, counted --------------------------------------------------

#: Keystroke-Level Model (Card, Moran & Newell, 1980): an average skilled typist's keystroke
#: (40 words a minute) and the mental preparation before each field's decision; plus a page
#: load allowance far above what the server takes. The estimate is a count, not a timing.
KEYSTROKE_SECONDS = 0.28
DECISION_SECONDS = 1.35
PAGE_LOAD_SECONDS = 1.0
FOCUSED = """() => { const e = document.activeElement;
  return {name: e.name || '', type: e.type || '', tag: e.tagName, value: e.value ?? '',
          text: (e.innerText || '').trim()}; }"""


class Keyboard:
    """A coordinator's hands: Tab through the page, type values, and keep count."""

    def __init__(self, page) -> None:
        self.page = page
        self.keys = self.decisions = self.pages = 0

    def press(self, key: str, times: int = 1) -> None:
        for _ in range(times):
            self.page.keyboard.press(key)
        self.keys += times

    def type(self, text: str) -> None:
        self.page.keyboard.type(text)
        self.keys += len(text)

    def tab(self) -> dict:
        self.press("Tab")
        return self.page.evaluate(FOCUSED)

    def submit(self) -> None:
        with self.page.expect_navigation():
            self.press("Enter")
        self.pages += 1

    def seconds(self) -> float:
        return self.keys * KEYSTROKE_SECONDS + self.decisions * DECISION_SECONDS + self.pages * PAGE_LOAD_SECONDS


def _fill_by_keyboard(keyboard: Keyboard, values: dict, codes: dict[str, str], last: bool) -> None:
    """Tab through one form from the top, entering `values` and missing-data `codes` where
    focus reaches their inputs, set it Complete, and press the save button."""
    from app.records.forms import MISSING_SUFFIX

    values = {name: (set(v) if isinstance(v, list) else v) for name, v in values.items()}
    codes = dict(codes)
    for _ in range(400):
        focused = keyboard.tab()
        name = focused["name"]
        if name.endswith(MISSING_SUFFIX) and name.removesuffix(MISSING_SUFFIX) in codes:
            keyboard.decisions += 1
            keyboard.type(codes.pop(name.removesuffix(MISSING_SUFFIX)))
        elif name in values and focused["type"] == "radio":
            options = keyboard.page.eval_on_selector_all(f'input[name="{name}"]', "els => els.map(e => e.value)")
            index = options.index(values.pop(name))
            keyboard.decisions += 1
            keyboard.press("Space") if index == 0 else keyboard.press("ArrowDown", index)
        elif name in values and focused["type"] == "checkbox":
            if focused["value"] in values[name]:
                keyboard.decisions += 1
                keyboard.press("Space")
                values[name].discard(focused["value"])
            if not values[name]:
                del values[name]
        elif name in values:
            keyboard.decisions += 1
            keyboard.type(str(values.pop(name)))
        elif name == "form_status":
            keyboard.decisions += 1
            keyboard.type("C")  # Complete: the first status starting with C
        elif focused["tag"] == "BUTTON" and focused["value"] == ("exit" if last else "form"):
            assert not values and not codes, f"never reached by Tab: {sorted(values) + sorted(codes)}"
            keyboard.submit()
            return
    raise AssertionError("the save button was never reached by Tab")


def test_a_published_case_by_keyboard_alone_in_under_three_minutes(new_page, demo):
    """Published case 1, entered from scratch with the keyboard only (Tab, typing, arrows,
    space, Enter) into a new record, form after form by "Save and go to ...", stores exactly
    what the demo loader stored for it; the keystrokes, decisions and page loads counted
    give a Keystroke-Level Model estimate under 3 minutes."""
    from sqlalchemy import select

    from app.extensions import db
    from app.records.models import FormInstance, Record
    from app.study import current_study
    from app.study.fieldtypes import field_type

    study = current_study()
    def forms_of(label: str) -> dict[str, FormInstance]:
        record = db.session.scalar(select(Record).where(Record.label == label))
        return {f.instrument: f for f in db.session.scalars(select(FormInstance).where(
            FormInstance.record_id == record.id))}

    forms = forms_of("KMU-0001")
    page = new_page()
    login(page, "coordinator")
    page.goto("/sites/KMU/records")
    keyboard = Keyboard(page)
    while keyboard.tab()["text"] != "Add a new record":
        assert keyboard.keys < 60, "the new-record button is not reachable by Tab"
    keyboard.submit()
    for number, inst in enumerate(study.instruments):
        stored = forms[inst.name]
        typed = {name: value for name, value in stored.data.items()
                 if field_type(study.field(name)).is_input}
        _fill_by_keyboard(keyboard, typed, stored.missing, last=number == len(study.instruments) - 1)
    page.wait_for_url("**/records/KMU-0004")

    db.session.expire_all()
    saved = forms_of("KMU-0004")
    assert set(saved) == set(forms)
    for name, original in forms.items():
        assert (saved[name].data, saved[name].missing, saved[name].status) == (original.data, original.missing, 2), name
    estimate = keyboard.seconds()
    report = (f"{keyboard.keys} keystrokes, {keyboard.decisions} field decisions, {keyboard.pages} page loads: "
              f"about {estimate:.0f} s by the Keystroke-Level Model")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "keyboard-entry.txt").write_text(report + "\n", encoding="utf-8")
    assert estimate < 180, report
    screenshot(page, "keyboard-published-case")
