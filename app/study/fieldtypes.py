"""Field types: how each type of CRF field parses input, shows a value and becomes a widget.

A registry of small classes, one per type (the indico pattern). The write path (web
and API alike) calls `parse`, the web form calls `make_wtforms_field`, and the loader
checks that a definition names only registered types. Adding a type is adding a class.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import date, datetime
from functools import lru_cache
from typing import Any, ClassVar

from email_validator import EmailNotValidError, validate_email
from wtforms import fields as wtf
from wtforms import widgets
from wtforms.fields.choices import SelectChoice

from app.study.definition import Field


class FieldValueError(ValueError):
    """A value a user typed that the field cannot take; the message is shown next to the field."""


_INT_RE = re.compile(r"^[+-]?\d+$", re.ASCII)
#: Whole numbers stay exact in every export format (float64 holds 15 digits exactly).
MAX_INTEGER_DIGITS = 15
_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$", re.ASCII)


class FieldType:
    """Base class: plain single-line text."""

    name: ClassVar[str] = "text"
    has_choices: ClassVar[bool] = False
    is_input: ClassVar[bool] = True
    max_length: ClassVar[int] = 500

    def parse(self, field: Field, raw: str | list[str] | None) -> Any:
        """Turn what a user or client sent into the stored value (None = blank)."""
        if isinstance(raw, list):
            raw = raw[0] if raw else None
        if raw is None:
            return None
        text = raw.strip()
        if text == "":
            return None
        return self.parse_text(field, text)

    def parse_text(self, field: Field, text: str) -> Any:
        if len(text) > self.max_length:
            raise FieldValueError(f"Too long: at most {self.max_length} characters.")
        return text

    def parse_bound(self, field: Field, bound: Any) -> Any:
        """Parse a min/max from the definition; raises FieldValueError if it does not fit."""
        raise FieldValueError(f"a {self.name} field has no minimum or maximum")

    def check_range(self, field: Field, value: Any, shown: str) -> None:
        if field.min is not None and value < field.min:
            raise FieldValueError(f"Must be at least {_bound(field.min)}; {shown} is below it.")
        if field.max is not None and value > field.max:
            raise FieldValueError(f"Must be at most {_bound(field.max)}; {shown} is above it.")

    def to_form(self, value: Any) -> str | list[str]:
        """The stored value as the form shows it."""
        return "" if value is None else str(value)

    def to_text(self, field: Field, value: Any) -> str:
        """A readable rendering for record pages and audit trails."""
        if value is None:
            return ""
        if self.has_choices:
            codes = value if isinstance(value, list) else [value]
            return ", ".join(field.choice_label(c) or c for c in codes)
        return str(value)

    def make_wtforms_field(self, field: Field, label: str) -> wtf.Field:
        return wtf.StringField(label, render_kw={"maxlength": self.max_length})


class NotesType(FieldType):
    name = "notes"
    max_length = 20000

    def make_wtforms_field(self, field: Field, label: str) -> wtf.Field:
        return wtf.TextAreaField(label, render_kw={"rows": 3, "maxlength": self.max_length})


class IntegerType(FieldType):
    name = "integer"

    def parse_text(self, field: Field, text: str) -> int:
        if not _INT_RE.match(text):
            raise FieldValueError(f"Enter a whole number (for example 12); '{text}' is not one.")
        if len(text.lstrip("+-0")) > MAX_INTEGER_DIGITS:
            raise FieldValueError(f"Too large: a whole number has at most {MAX_INTEGER_DIGITS} digits.")
        value = int(text)
        self.check_range(field, value, text)
        return value

    def parse_bound(self, field: Field, bound: Any) -> int:
        if isinstance(bound, bool) or not isinstance(bound, int):
            raise FieldValueError(f"{bound!r} is not a whole number")
        return bound

    def make_wtforms_field(self, field: Field, label: str) -> wtf.Field:
        return wtf.StringField(label, render_kw={"inputmode": "numeric"})


class NumberType(FieldType):
    name = "number"

    def parse_text(self, field: Field, text: str) -> float:
        if "," in text and "." not in text and _NUMBER_RE.match(text.replace(",", ".")):
            raise FieldValueError(f"Use a point as the decimal mark: '{text.replace(',', '.')}'.")
        if not _NUMBER_RE.match(text):
            raise FieldValueError(f"Enter a number (for example 2.5); '{text}' is not one.")
        value = float(text)
        if not math.isfinite(value):
            raise FieldValueError(f"'{text}' is not a finite number.")
        self.check_range(field, value, text)
        return value

    def parse_bound(self, field: Field, bound: Any) -> float:
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise FieldValueError(f"{bound!r} is not a number")
        return float(bound)

    def to_form(self, value: Any) -> str:
        if value is None:
            return ""
        return format_number(value)

    def to_text(self, field: Field, value: Any) -> str:
        return self.to_form(value)

    def make_wtforms_field(self, field: Field, label: str) -> wtf.Field:
        return wtf.StringField(label, render_kw={"inputmode": "decimal"})


class DateType(FieldType):
    name = "date"

    def parse_text(self, field: Field, text: str) -> str:
        try:
            value = date.fromisoformat(text)
        except ValueError:
            value = None
        if value is None or not re.match(r"^\d{4}-\d{2}-\d{2}$", text):
            raise FieldValueError(f"Enter a date as YYYY-MM-DD (for example 2024-03-01); '{text}' is not one.")
        iso = value.isoformat()
        self.check_range(field, iso, iso)
        return iso

    def parse_bound(self, field: Field, bound: Any) -> str:
        if isinstance(bound, date):
            return bound.isoformat()
        try:
            return date.fromisoformat(str(bound)).isoformat()
        except ValueError as exc:
            raise FieldValueError(f"{bound!r} is not a YYYY-MM-DD date") from exc

    def make_wtforms_field(self, field: Field, label: str) -> wtf.Field:
        return wtf.StringField(label, widget=widgets.DateInput(), render_kw={"placeholder": "YYYY-MM-DD"})


def _parse_datetime(text: str) -> str | None:
    """'YYYY-MM-DD HH:MM' (seconds dropped) from the forms a browser or client sends, else None."""
    normalised = text.replace("T", " ")
    for pattern in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(normalised, pattern).strftime("%Y-%m-%d %H:%M")
        except ValueError:
            continue
    return None


class DateTimeType(FieldType):
    name = "datetime"

    def parse_text(self, field: Field, text: str) -> str:
        stored = _parse_datetime(text)
        if stored is None:
            raise FieldValueError(
                "Enter a date and time as YYYY-MM-DD HH:MM (for example 2024-03-01 14:30); "
                f"'{text}' is not one."
            )
        self.check_range(field, stored, stored)
        return stored

    def parse_bound(self, field: Field, bound: Any) -> str:
        stored = _parse_datetime(str(bound))
        if stored is None:
            raise FieldValueError(f"{bound!r} is not a YYYY-MM-DD HH:MM date-time")
        return stored

    def to_form(self, value: Any) -> str:
        return "" if value is None else str(value).replace(" ", "T")

    def make_wtforms_field(self, field: Field, label: str) -> wtf.Field:
        return wtf.StringField(label, widget=widgets.DateTimeLocalInput())


class EmailType(FieldType):
    name = "email"

    def parse_text(self, field: Field, text: str) -> str:
        try:
            return validate_email(text, check_deliverability=False).normalized
        except EmailNotValidError:
            raise FieldValueError(f"Enter an e-mail address such as name@example.org; '{text}' is not one.") from None

    def make_wtforms_field(self, field: Field, label: str) -> wtf.Field:
        return wtf.StringField(label, widget=widgets.EmailInput())


class ChoiceType(FieldType):
    """One code out of the field's choices (radio buttons)."""

    name = "radio"
    has_choices = True

    def parse_text(self, field: Field, text: str) -> str:
        if text not in field.choice_codes:
            allowed = ", ".join(f"{c.code} ({c.label})" for c in field.choices)
            raise FieldValueError(f"'{text}' is not one of the choices: {allowed}.")
        return text

    def make_wtforms_field(self, field: Field, label: str) -> wtf.Field:
        return wtf.RadioField(label, choices=select_choices((c.code, c.label) for c in field.choices),
                              validate_choice=False)


class DropdownType(ChoiceType):
    name = "dropdown"

    def make_wtforms_field(self, field: Field, label: str) -> wtf.Field:
        choices = select_choices([("", "—"), *((c.code, c.label) for c in field.choices)])
        return wtf.SelectField(label, choices=choices, validate_choice=False)


class YesNoType(ChoiceType):
    name = "yesno"


class CheckboxType(FieldType):
    """Several codes at once, stored as a list in the definition's choice order."""

    name = "checkbox"
    has_choices = True

    def parse(self, field: Field, raw: str | list[str] | None) -> list[str] | None:
        if raw is None:
            return None
        items = raw if isinstance(raw, list) else [p for p in raw.split(",")]
        codes = {item.strip() for item in items if item and item.strip()}
        unknown = sorted(codes - set(field.choice_codes))
        if unknown:
            allowed = ", ".join(f"{c.code} ({c.label})" for c in field.choices)
            raise FieldValueError(f"'{', '.join(unknown)}' is not one of the choices: {allowed}.")
        ordered = [code for code in field.choice_codes if code in codes]
        return ordered or None

    def to_form(self, value: Any) -> list[str]:
        return list(value or [])

    def make_wtforms_field(self, field: Field, label: str) -> wtf.Field:
        return wtf.SelectMultipleField(
            label,
            choices=select_choices((c.code, c.label) for c in field.choices),
            widget=widgets.ListWidget(prefix_label=False),
            option_widget=widgets.CheckboxInput(),
            validate_choice=False,
        )


class CalcType(FieldType):
    """Computed by the server from the field's calculation; never typed by a user."""

    name = "calc"
    is_input = False

    def parse_text(self, field: Field, text: str) -> float:
        return NumberType().parse_text(field, text)

    def to_form(self, value: Any) -> str:
        return "" if value is None else format_number(value)

    def to_text(self, field: Field, value: Any) -> str:
        return self.to_form(value)

    def make_wtforms_field(self, field: Field, label: str) -> wtf.Field:
        return wtf.StringField(label, render_kw={"readonly": True, "tabindex": "-1"})


class DescriptiveType(FieldType):
    """Text shown on the form; holds no data."""

    name = "descriptive"
    is_input = False

    def parse(self, field: Field, raw: str | list[str] | None) -> None:
        return None


def _bound(value: Any) -> str:
    return format_number(value) if isinstance(value, float) else str(value)


def select_choices(pairs: Iterable[tuple[Any, str]]) -> list[SelectChoice]:
    """(value, label) pairs as WTForms option objects."""
    return [SelectChoice(value, label) for value, label in pairs]


@lru_cache(maxsize=65536, typed=True)
def format_number(value: float | int) -> str:
    """Show 28.0 as 28 and keep at most 10 significant decimals, as REDCap does for calcs.

    Remembered: measured values repeat (weeks, grams, days), and a large export formats
    millions of them; `typed` keeps 1 and 1.0 (and True) apart."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:.10g}" if isinstance(value, float) else str(value)


FIELD_TYPES: dict[str, FieldType] = {
    t.name: t
    for t in (
        FieldType(),
        NotesType(),
        IntegerType(),
        NumberType(),
        DateType(),
        DateTimeType(),
        EmailType(),
        YesNoType(),
        ChoiceType(),
        DropdownType(),
        CheckboxType(),
        CalcType(),
        DescriptiveType(),
    )
}

YESNO_CHOICES = (("1", "Yes"), ("0", "No"))


def field_type(field: Field) -> FieldType:
    return FIELD_TYPES[field.type]
