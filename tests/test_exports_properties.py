"""The de-identification property: whatever the records hold, no identifier, date of birth,
calendar date, free text or record ID reaches any file of the pooled bundle, and every
interval computed from the export equals the interval in the source data."""

from __future__ import annotations

import string
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.extensions import db
from tests.exports_support import add_record, export, pseudonyms

# Non-ASCII first, so a secret cannot turn up by chance in base64 metadata or binary data.
HEADS = "가나다라마바사ÄÖÜßéñ"
ALPHABET = string.ascii_letters + string.digits + " -'" + HEADS
secret_text = st.builds(str.__add__, st.sampled_from(HEADS), st.text(alphabet=ALPHABET, min_size=7, max_size=20))
days = st.integers(min_value=0, max_value=90)


@st.composite
def case(draw: st.DrawFn) -> dict[str, Any]:
    """A prospective case with random identifiers, free text and dates (all after birth)."""
    dob = draw(st.dates(min_value=date(2000, 1, 1), max_value=date(2020, 12, 31)))
    lesion = dob + timedelta(days=draw(days))
    exposures = [
        datetime.combine(dob + timedelta(days=draw(days)), time(draw(st.integers(0, 23)), draw(st.integers(0, 59))))
        for _ in range(draw(st.integers(1, 3)))
    ]
    return {
        "site": draw(st.sampled_from(["KMU", "NTH", "RVH"])),
        "enrolment": {
            "case_source": draw(st.sampled_from(["1", "2"])), "initials": draw(secret_text),
            "hospital_number": draw(secret_text), "dob": dob.isoformat(),
            "nicu_admission_date": (dob + timedelta(days=draw(st.integers(0, 3)))).isoformat(),
            "sex": draw(st.sampled_from(["1", "2", "3"])), "ga_weeks": str(draw(st.integers(23, 42))),
            "calcium_indication": "3", "calcium_indication_other": draw(secret_text),
        },
        "calcium_exposure": [{"drug": "1", "infusion_start": moment.strftime("%Y-%m-%d %H:%M")}
                             for moment in exposures],
        "lesion_presentation": {"lesion_date": lesion.isoformat()},
        "imaging_followup": [{"imaging_date": (lesion + timedelta(days=draw(days))).isoformat()}
                             for _ in range(draw(st.integers(0, 2)))],
        "outcome": {"complete_resolution": "1",
                    "clinical_resolution_date": (lesion + timedelta(days=draw(days))).isoformat(),
                    "outcome_notes": draw(secret_text)},
    }


def secrets_of(spec: dict[str, Any], label: str) -> list[str]:
    enrolment = spec["enrolment"]
    texts = [enrolment[k] for k in ("initials", "hospital_number", "calcium_indication_other", "dob",
                                    "nicu_admission_date")]
    texts += [spec["outcome"]["outcome_notes"], spec["outcome"]["clinical_resolution_date"],
              spec["lesion_presentation"]["lesion_date"], label]
    texts += [f["infusion_start"][:10] for f in spec["calcium_exposure"]]
    return texts + [f["imaging_date"] for f in spec["imaging_followup"]]


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(cases=st.lists(case(), min_size=1, max_size=3))
def test_pooled_export_leaks_nothing_and_keeps_intervals(demo, tmp_path, cases):
    try:
        labels = [add_record(spec["site"], {k: v for k, v in spec.items() if k != "site"}).label for spec in cases]
        bundle = export(tmp_path, "pooled_case_series")
        for spec, label in zip(cases, labels, strict=True):
            for secret in secrets_of(spec, label):
                for name, data in bundle.members.items():
                    assert secret.encode("utf-8") not in data, f"{secret!r} found in {name}"
        main = bundle.csv("cases").set_index("study_id")
        exposures = bundle.csv("calcium_exposure")
        imaging = bundle.csv("imaging_followup")
        for spec, label in zip(cases, labels, strict=True):
            key = pseudonyms().subject(label)
            row = main.loc[key]
            dob = moment(spec["enrolment"]["dob"])
            lesion = moment(spec["lesion_presentation"]["lesion_date"])
            resolved = moment(spec["outcome"]["clinical_resolution_date"])
            assert row["clinical_resolution_date_day"] - row["lesion_date_day"] == (resolved - lesion).days
            assert row["lesion_date_age"] == (lesion - dob).days
            assert row["clinical_resolution_date_age"] == (resolved - dob).days
            mine = exposures[exposures["study_id"] == key].set_index("instance")
            assert 0 <= mine["infusion_start_day"].min() < 1  # day 0 is the first exposure's day
            for number, given_form in enumerate(spec["calcium_exposure"], 1):
                start = moment(given_form["infusion_start"])
                expected = (start - lesion).total_seconds() / 86400
                assert mine.loc[number, "infusion_start_day"] - row["lesion_date_day"] == pytest.approx(expected)
                assert mine.loc[number, "infusion_start_age"] == pytest.approx((start - dob).total_seconds() / 86400)
            scans = imaging[imaging["study_id"] == key].set_index("instance")
            for number, given_form in enumerate(spec["imaging_followup"], 1):
                interval = (moment(given_form["imaging_date"]) - lesion).days
                assert scans.loc[number, "imaging_date_day"] - row["lesion_date_day"] == interval
    finally:
        db.session.rollback()
