"""Plausible synthetic cases of neonatal iatrogenic calcinosis cutis, as raw form submissions.

A case is what coordinators would type into the forms, in the order they would save them
(definition order, instances ascending), plus the data queries a monitor would raise and
the investigator's signature. Values are text, as a browser or API client sends them, so
the bulk writer validates them exactly as the write path does.

The distributions follow the clinical picture of the registry: mostly preterm neonates,
calcium gluconate through a peripheral line in the first weeks of life, a nodule noticed
one to three weeks later near the line, resolution over weeks to months. Fields the story
does not know (a definition that has grown since) get a generic value for their type, so
the generator keeps working for any definition the loader accepts.

Every case is generated from its own random stream, seeded by (seed, ordinal): the same
`--seed` gives the same cases whatever the batch size, and a case never depends on what
the database already holds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from app.logic import referenced_fields
from app.records.models import FormStatus
from app.review.models import SignatureMeaning
from app.study.definition import Field, Instrument, Study
from app.study.fieldtypes import field_type

Raw = str | list[str]

#: Per-form status: most forms are finished, some await verification, a few are half-entered.
STATUS_WEIGHTS = {FormStatus.COMPLETE: 82, FormStatus.UNVERIFIED: 10, FormStatus.INCOMPLETE: 8}
#: Share of values replaced by a missing-data code (fields no logic depends on).
MISSING_CODE_RATE = 0.03
QUERY_RATE = 0.10
SIGNED_RATE = 0.30
LATE_PRESENTATION_RATE = 0.01
FIRST_DOB = date(2016, 1, 1)
DOB_SPAN_DAYS = 3300

QUERY_TEXTS = (
    "Please check this value against the source document.",
    "This differs from the discharge summary; please confirm.",
    "The date looks inconsistent with the infusion chart; please verify.",
    "Unusual value for this gestational age; please confirm.",
)
ANSWER_TEXTS = (
    "Checked against the source document: the value is correct.",
    "Confirmed with the nursing record.",
)

#: Median birth weight (g) by completed gestational week (Fenton 2013, sexes pooled, rounded).
BIRTH_WEIGHT_MEDIAN = {
    23: 600, 24: 650, 25: 750, 26: 850, 27: 1000, 28: 1100, 29: 1250, 30: 1400, 31: 1600, 32: 1800,
    33: 2000, 34: 2250, 35: 2500, 36: 2700, 37: 2950, 38: 3150, 39: 3300, 40: 3450, 41: 3600, 42: 3700,
}


@dataclass(frozen=True, slots=True)
class FormSpec:
    """One form instance as submitted: raw values, missing-data codes and the chosen status."""

    instrument: str
    instance: int
    values: Mapping[str, Raw]
    missing: Mapping[str, str]
    status: int


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """A monitor's question about one field; optionally answered by the site, then closed."""

    instrument: str
    instance: int
    field: str
    text: str
    answer: str | None
    closed: bool


@dataclass(frozen=True, slots=True)
class CaseSpec:
    forms: tuple[FormSpec, ...]
    queries: tuple[QuerySpec, ...]
    #: The investigator's signature meaning (SignatureMeaning value), or None if unsigned.
    signature: str | None


def _pick(rng: random.Random, weights: Mapping[Any, int]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None


def _number(value: float, places: int = 1) -> str:
    return f"{value:.{places}f}"


class _Story:
    """One patient's course, told form by form; cross-form facts (dates, sites) live here.

    Each method returns (values, missing): `values` maps every field the story knows to
    raw text or None (deliberately blank, e.g. a branch not taken); `missing` holds the
    "not reported" codes of a published case.
    """

    def __init__(self, rng: random.Random, ordinal: int) -> None:
        self.rng = rng
        self.ordinal = ordinal
        self.source = _pick(rng, {"1": 50, "2": 45, "3": 5})
        self.published = self.source == "3"
        self.dob = FIRST_DOB + timedelta(days=rng.randrange(DOB_SPAN_DAYS))
        self.ga_weeks = int(_clamp(round(rng.gauss(31.5, 4.2)), 23, 42))
        median = BIRTH_WEIGHT_MEDIAN[self.ga_weeks]
        self.birth_weight = int(_clamp(round(median * math.exp(rng.gauss(0, 0.14)) / 5) * 5, 350, 6000))
        self.hypocalcaemia = rng.random() < 0.6
        self.infusion_days: list[date] = []
        self.line_site = "1"
        self.lesion_date = self.dob
        self.nodule_mm = 10.0
        self.xray_done = "3"
        self.imaging_dates: list[date] = []

    def _nr(self, names: list[str]) -> dict[str, str]:
        """A published case codes what the paper does not give as NR (Not reported)."""
        return dict.fromkeys(names, "NR") if self.published else {}

    def enrolment(self) -> tuple[dict[str, Raw | None], dict[str, str]]:
        rng = self.rng
        later = rng.randrange(1, 60) if self.source == "1" else rng.randrange(200, 1500)
        indication = "1" if self.hypocalcaemia else _pick(rng, {"2": 88, "3": 12})
        serum = _clamp(rng.gauss(1.75, 0.15) if self.hypocalcaemia else rng.gauss(2.25, 0.15), 1.0, 3.2)
        values: dict[str, Raw | None] = {
            "case_source": self.source,
            "literature_doi": f"10.5555/synthetic.{self.ordinal}" if self.published else None,
            "literature_case_number": str(rng.randrange(1, 6)) if self.published else None,
            "enrolment_date": _iso(self.dob + timedelta(days=later)),
            "initials": "".join(rng.choice("ABCDEFGHIJKLMNOPRSTUVWY") for _ in range(2)),
            "hospital_number": f"SYN{rng.randrange(10**7):07d}",
            "dob": _iso(self.dob),
            "sex": _pick(rng, {"1": 54, "2": 45, "3": 1}),
            "ga_weeks": str(self.ga_weeks),
            "ga_days": str(rng.randrange(7)),
            "birth_weight_g": str(self.birth_weight),
            "nicu_admission_date": _iso(self.dob + timedelta(days=_pick(rng, {0: 85, 1: 10, 2: 5}))),
            "calcium_indication": indication,
            "calcium_indication_other": rng.choice(["Exchange transfusion", "Hyperkalaemia", "Cardiac surgery"])
            if indication == "3" else None,
            "serum_calcium_pre": _number(serum, 2),
            "ionised_calcium_pre": _number(_clamp(serum * 0.5 + rng.gauss(0, 0.05), 0.5, 1.6), 2),
        }
        missing = self._nr(["initials", "hospital_number", "dob", "ga_weeks", "ga_days", "birth_weight_g",
                            "nicu_admission_date", "serum_calcium_pre", "ionised_calcium_pre"])
        return values, missing

    def calcium_exposures(self) -> list[tuple[dict[str, Raw | None], dict[str, str]]]:
        rng = self.rng
        count = 1 if self.published else _pick(rng, {1: 45, 2: 30, 3: 15, 4: 10})
        day = self.dob + timedelta(days=int(_clamp(rng.expovariate(1 / 4), 0, 28)))
        exposures = []
        for _ in range(count):
            self.infusion_days.append(day)
            drug = _pick(rng, {"1": 85, "2": 12, "3": 3})
            concentration = rng.choice([10, 10, 10, 5, 2]) if drug != "2" else rng.choice([10, 10, 5])
            dose = rng.randrange(100, 800, 10) if drug != "2" else rng.randrange(20, 100, 5)
            volume = _clamp(dose * self.birth_weight / 1000 / (concentration * 10), 0.1, 1000)
            line_type = _pick(rng, {"1": 78, "2": 10, "3": 9, "4": 3})
            self.line_site = _pick(rng, {"1": 48, "2": 30, "3": 14, "4": 4, "5": 4})
            recognised = _pick(rng, {"1": 65, "0": 35})
            values: dict[str, Raw | None] = {
                "drug": drug,
                "drug_other": "Calcium glubionate" if drug == "3" else None,
                "route": _pick(rng, {"1": 96, "2": 2, "3": 2}),
                "concentration_pct": str(concentration),
                "dose_mg_kg": str(dose),
                "volume_ml": _number(volume),
                "diluted": "1" if concentration < 10 else _pick(rng, {"0": 80, "1": 20}),
                "infusion_start": f"{day.isoformat()} {rng.randrange(24):02d}:{rng.randrange(0, 60, 5):02d}",
                "line_type": line_type,
                "line_type_other": "Intraosseous" if line_type == "4" else None,
                "line_site": self.line_site,
                "line_site_other": "Neck" if self.line_site == "5" else None,
                "line_side": _pick(rng, {"1": 48, "2": 48, "3": 4}) if self.line_site != "5" else None,
                "extravasation_recognised": recognised,
                "extravasation_date": _iso(day + timedelta(days=_pick(rng, {0: 80, 1: 20})))
                if recognised == "1" else None,
            }
            missing = self._nr(["concentration_pct", "dose_mg_kg", "volume_ml", "diluted", "infusion_start",
                                "line_type", "line_site", "line_side", "extravasation_recognised"])
            exposures.append((values, missing))
            day += timedelta(days=rng.randrange(1, 6))
        return exposures

    def lesion_presentation(self) -> tuple[dict[str, Raw | None], dict[str, str]]:
        rng = self.rng
        implicated = self.infusion_days[-1] if self.infusion_days else self.dob
        # Usually within weeks; about 1 in 100 is noticed after six months (a data-quality
        # warning the coordinator confirms, as real registries have).
        delay = rng.randrange(181, 241) if rng.random() < LATE_PRESENTATION_RATE else \
            1 + int(_clamp(rng.expovariate(1 / 7), 0, 60))
        self.lesion_date = implicated + timedelta(days=delay)
        self.nodule_mm = _clamp(math.exp(rng.gauss(math.log(10), 0.5)), 1, 80)
        location = self.line_site if rng.random() < 0.85 else _pick(rng, {"1": 40, "2": 30, "3": 20, "4": 10})
        findings = [code for code, p in (("1", 0.65), ("2", 0.55), ("3", 0.10), ("4", 0.08), ("5", 0.05))
                    if rng.random() < p]
        self.xray_done = _pick(rng, {"1": 55, "2": 10, "3": 35})
        values: dict[str, Raw | None] = {
            "lesion_date": _iso(self.lesion_date),
            "age_presentation_reported_days": str(rng.randrange(5, 46)) if self.published else None,
            "nodule_count": str(_pick(rng, {1: 55, 2: 20, 3: 12, 4: 7, 5: 6})),
            "nodule_size_mm": _number(self.nodule_mm),
            "lesion_location": location,
            "lesion_location_other": "Neck" if location == "5" else None,
            "skin_findings": findings or None,
            "ulcer_size_mm": _number(rng.uniform(2, 20)) if "3" in findings else None,
            "suspected_infection": _pick(rng, {"0": 88, "1": 12}),
            "initial_xray_done": self.xray_done,
            "initial_xray_date": _iso(self.lesion_date + timedelta(days=rng.randrange(4)))
            if self.xray_done in ("1", "2") else None,
        }
        return values, self._nr(["lesion_date", "nodule_count", "nodule_size_mm", "lesion_location",
                                 "suspected_infection", "initial_xray_date"])

    def imaging_followups(self) -> list[tuple[dict[str, Raw | None], dict[str, str]]]:
        rng = self.rng
        if self.published:
            count = 1
        elif self.xray_done == "1":
            count = _pick(rng, {1: 35, 2: 35, 3: 20, 4: 10})
        else:
            count = _pick(rng, {0: 40, 1: 40, 2: 20})
        day = self.lesion_date + timedelta(days=rng.randrange(14, 36))
        size = self.nodule_mm
        followups = []
        for number in range(count):
            self.imaging_dates.append(day)
            modality = _pick(rng, {"1": 70, "2": 28, "3": 2})
            calcified = rng.random() < (0.9, 0.6, 0.35, 0.2)[min(number, 3)]
            size = _clamp(size * rng.uniform(0.5, 0.95), 0.5, 80)
            values: dict[str, Raw | None] = {
                "imaging_date": _iso(day),
                "imaging_modality": modality,
                "imaging_modality_other": "Magnetic resonance imaging" if modality == "3" else None,
                "imaging_calcification": "1" if calcified else "0",
                "imaging_size_mm": _number(size) if calcified else None,
            }
            followups.append((values, self._nr(["imaging_date"])))
            day += timedelta(days=rng.randrange(21, 61))
        return followups

    def treatment(self) -> tuple[dict[str, Raw | None], dict[str, str]]:
        rng = self.rng
        kind = _pick(rng, {"1": 55, "2": 38, "3": 4, "4": 3})
        measures = [code for code, p in (("1", 0.5), ("2", 0.4), ("3", 0.15), ("4", 0.2), ("5", 0.15), ("6", 0.3))
                    if rng.random() < p] or ["1"]
        values: dict[str, Raw | None] = {
            "treatment_type": kind,
            "conservative_measures": measures if kind == "2" else None,
            "surgical_procedure": rng.choice(["Excision of the calcified nodule under local anaesthesia.",
                                              "Incision and curettage of calcific material."])
            if kind == "3" else None,
            "treatment_other": "Topical sodium thiosulfate" if kind == "4" else None,
        }
        return values, {}

    def outcome(self) -> tuple[dict[str, Raw | None], dict[str, str]]:
        rng = self.rng
        resolved = _pick(rng, {"1": 82, "0": 18})
        clinical = self.lesion_date + timedelta(days=int(_clamp(math.exp(rng.gauss(math.log(75), 0.6)), 14, 600)))
        radiographic = clinical + timedelta(days=rng.randrange(61)) if rng.random() < 0.6 else None
        last_seen = max([clinical if resolved == "1" else self.lesion_date, *self.imaging_dates])
        complications = ["0"] if rng.random() < 0.85 else (
            [code for code, p in (("1", 0.8), ("2", 0.2), ("3", 0.1), ("4", 0.1)) if rng.random() < p] or ["1"]
        )
        values: dict[str, Raw | None] = {
            "complete_resolution": resolved,
            "clinical_resolution_date": _iso(clinical) if resolved == "1" else None,
            "radiographic_resolution_date": _iso(radiographic) if resolved == "1" else None,
            "time_to_resolution_reported_days": str(rng.randrange(14, 200))
            if self.published and resolved == "1" else None,
            "complications": complications,
            "complication_other": "Hypopigmentation" if "4" in complications else None,
            "last_followup_date": _iso(last_seen + timedelta(days=rng.randrange(181))),
            "outcome_notes": "Seen in the follow-up clinic; parents satisfied." if rng.random() < 0.1 else None,
        }
        return values, self._nr(["clinical_resolution_date", "radiographic_resolution_date", "last_followup_date"])

    def instances(self, instrument: Instrument) -> list[tuple[dict[str, Raw | None], dict[str, str]]]:
        """The story's forms of `instrument`; an instrument it does not know gets generic ones."""
        single = {"enrolment": self.enrolment, "lesion_presentation": self.lesion_presentation,
                  "treatment": self.treatment, "outcome": self.outcome}
        repeated = {"calcium_exposure": self.calcium_exposures, "imaging_followup": self.imaging_followups}
        if instrument.name in single:
            return [single[instrument.name]()]
        if instrument.name in repeated:
            return repeated[instrument.name]()
        count = self.rng.randrange(1, 4) if instrument.repeatable else 1
        return [({}, {}) for _ in range(count)]


def generic_value(rng: random.Random, f: Field) -> Raw | None:
    """A valid value of any type within the field's bounds, for fields the story does not know."""
    kind = f.type
    if kind in ("radio", "dropdown", "yesno"):
        return rng.choice(f.choice_codes)
    if kind == "checkbox":
        return rng.sample(list(f.choice_codes), rng.randrange(1, len(f.choice_codes) + 1))
    if kind == "integer":
        low = f.min if f.min is not None else 0
        return str(rng.randint(low, f.max if f.max is not None else low + 100))
    if kind == "number":
        low = float(f.min) if f.min is not None else 0.0
        high = float(f.max) if f.max is not None else low + 100
        return _number(_clamp(round(rng.uniform(low, high), 1), low, high))
    if kind in ("date", "datetime"):
        low = date.fromisoformat(str(f.min)[:10]) if f.min is not None else FIRST_DOB
        high = date.fromisoformat(str(f.max)[:10]) if f.max is not None else low + timedelta(days=DOB_SPAN_DAYS)
        day = low + timedelta(days=rng.randrange(max(1, (high - low).days)))
        return day.isoformat() if kind == "date" else f"{day.isoformat()} {rng.randrange(24):02d}:00"
    if kind == "email":
        return f"person{rng.randrange(10**6)}@example.org"
    return "Synthetic entry"


class CaseGenerator:
    """Cases for one study and seed; `case(k)` is the k-th case, the same on every call."""

    def __init__(self, study: Study, seed: int) -> None:
        self.study = study
        self.seed = seed
        driving: set[str] = set()
        for f in study.iter_fields():
            for tree in (f.branching_tree, f.calculation_tree):
                if tree is not None:
                    driving |= referenced_fields(tree)
        #: Fields that take a random missing-data code: no branching or calculation reads them,
        #: so coding one never changes which other fields are shown.
        self.codable = frozenset(
            f.name for f in study.iter_fields()
            if field_type(f).is_input and f.allow_missing_codes and f.name not in driving
        )
        #: Unknown is the commonest reason a value is missing, Not applicable the rarest.
        self.code_weights = dict(zip([m.code for m in study.missing_codes], (50, 25, 10, 15), strict=False))

    def case(self, ordinal: int) -> CaseSpec:
        # Reproducible on purpose (same seed, same cases); nothing secret comes from it.
        rng = random.Random(f"casebook-synthetic:{self.seed}:{ordinal}")  # noqa: S311
        story = _Story(rng, ordinal)
        instruments = self.study.instruments
        stage = _pick(rng, {"full": 75, "partial": 18, "enrolment": 7})
        if stage == "full" or len(instruments) < 3:
            last = len(instruments) - 1
        else:
            last = 0 if stage == "enrolment" else rng.randrange(1, len(instruments) - 1)
        forms: list[FormSpec] = []
        for instrument in instruments[: last + 1]:
            for instance, (values, missing) in enumerate(story.instances(instrument), start=1):
                forms.append(self._form(rng, instrument, instance, values, missing))
        queries = tuple(self._query(rng, forms) for _ in range(rng.randrange(1, 3))) \
            if forms and rng.random() < QUERY_RATE else ()
        all_complete = all(f.status == FormStatus.COMPLETE for f in forms)
        signed = stage == "full" and all_complete and rng.random() < SIGNED_RATE
        meaning = _pick(rng, {SignatureMeaning.REVIEWED.value: 70, SignatureMeaning.APPROVED.value: 30})
        return CaseSpec(tuple(forms), queries, meaning if signed else None)

    def _form(
        self, rng: random.Random, instrument: Instrument, instance: int,
        story_values: Mapping[str, Raw | None], story_missing: Mapping[str, str],
    ) -> FormSpec:
        values: dict[str, Raw] = {}
        missing: dict[str, str] = {}
        for f in instrument.data_fields:
            if not field_type(f).is_input:
                continue
            if f.name in story_missing and f.allow_missing_codes:
                missing[f.name] = story_missing[f.name]
                continue
            value = story_values[f.name] if f.name in story_values else generic_value(rng, f)
            if value is None:
                continue
            if f.name in self.codable and self.code_weights and rng.random() < MISSING_CODE_RATE:
                missing[f.name] = _pick(rng, self.code_weights)
            else:
                values[f.name] = value
        status = _pick(rng, STATUS_WEIGHTS)
        if status == FormStatus.INCOMPLETE:
            filled = sorted([*values, *missing])
            for name in rng.sample(filled, min(len(filled), rng.randrange(1, 4))):
                values.pop(name, None)
                missing.pop(name, None)
        return FormSpec(instrument.name, instance, values, missing, int(status))

    def _query(self, rng: random.Random, forms: list[FormSpec]) -> QuerySpec:
        form = rng.choice(forms)
        filled = sorted([*form.values, *form.missing]) or [
            f.name for f in self.study.instrument(form.instrument).data_fields if field_type(f).is_input
        ]
        outcome = _pick(rng, {"open": 55, "answered": 25, "closed": 20})
        return QuerySpec(
            form.instrument, form.instance, rng.choice(filled), rng.choice(QUERY_TEXTS),
            answer=rng.choice(ANSWER_TEXTS) if outcome != "open" else None, closed=outcome == "closed",
        )
