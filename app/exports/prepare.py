"""Turning a stored record into what the profile lets out: pseudonyms, day 0, birth date, suppression.

Everything per record that more than one column needs is resolved once here, so the
columns (in `plan`) stay simple functions of a prepared record.
"""

from __future__ import annotations

from datetime import datetime

from app.exports.disclosure import DisclosureCheck
from app.exports.plan import EARLIEST_DATE, Plan, RecordView, day_of
from app.exports.pseudonyms import Pseudonymiser
from app.exports.source import SourceRecord


class Preparer:
    def __init__(self, plan: Plan, pseudonyms: Pseudonymiser, check: DisclosureCheck | None) -> None:
        self.plan = plan
        self.profile = plan.profile
        self.pseudonyms = pseudonyms
        self.check = check
        study = plan.study
        self._instrument_of = {f.name: f.instrument for f in study.iter_fields()}
        self._fallback = tuple(f.name for f in plan.date_fields)

    def view(self, rec: SourceRecord) -> RecordView:
        p = self.profile
        if p.site == "pseudonym":
            site: str | None = self.pseudonyms.site(rec.site_code)
        else:
            site = rec.site_code if p.site == "code" else None
        view = RecordView(
            key=self.pseudonyms.subject(rec.label) if p.record_id == "pseudonym" else rec.label,
            site=site,
            forms=rec.forms,
            instances=rec.instances,
            suppressed=self.check is not None and self.check.suppressed(rec.site_code, rec.forms),
        )
        if p.dates.mode == "relative":
            view.day0, view.day0_source = self._day0(rec)
        elif p.dates.mode == "shift":
            view.shift = self.pseudonyms.shift_days(rec.label)
        if p.dates.age_from:
            form = rec.forms.get((self._instrument_of[p.dates.age_from], 1))
            if form is not None:
                view.birth = day_of(form.data.get(p.dates.age_from))
                view.birth_code = form.missing.get(p.dates.age_from)
        return view

    def _days(self, rec: SourceRecord, name: str) -> list[datetime]:
        """Midnight of each of the record's dates in field `name`."""
        return [d for form in rec.instances.get(self._instrument_of[name], ())
                if (d := day_of(form.data.get(name))) is not None]

    def _day0(self, rec: SourceRecord) -> tuple[datetime | None, str | None]:
        """Midnight of the earliest date of the first anchor field the record has a value for;
        failing all, of the record's earliest exported date (named 'earliest_date')."""
        for name in self.profile.dates.anchor:
            days = self._days(rec, name)
            if days:
                return min(days), name
        days = [d for name in self._fallback for d in self._days(rec, name)]
        return (min(days), EARLIEST_DATE) if days else (None, None)
