"""Export profiles: what an export holds and how it is de-identified, read from `exports/*.yaml`.

Profiles are data, like the forms, and are validated against the study definition when
the app starts: a profile naming a field that no longer exists, or a "de-identified"
profile that would let a record ID or a calendar date out, stops the app instead of
producing an export that cannot be trusted. Every problem is reported together, each
naming the file and the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.logic import Expr, LogicError, parse, referenced_fields
from app.study.definition import Study
from app.study.loader import SafeLoader

PROFILE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,59}$")
TABLE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

#: Who may use a profile. `deidentified`: statisticians and admins, every site pooled.
#: `site`: one site's identified data, for that site's investigators and for admins.
ACCESS = ("deidentified", "site")
LAYOUTS = ("wide", "long")
REPEATABLE = ("tables", "columns")
RECORD_IDS = ("pseudonym", "label")
SITES = ("pseudonym", "code", "drop")
KEEP_DROP = ("drop", "keep")
DATE_MODES = ("relative", "shift", "keep")
DISCLOSURE_ACTIONS = ("suppress", "refuse")
DATE_TYPES = ("date", "datetime")

PROFILE_KEYS = {"label", "description", "access", "instruments", "exclude_fields", "tables", "record_id", "site",
                "identifiers", "free_text", "keep_free_text", "dates", "disclosure"}
TABLE_KEYS = {"layout", "repeatable", "main"}
DATE_KEYS = {"mode", "anchor", "age_from"}
DISCLOSURE_KEYS = {"k", "quasi_identifiers", "exempt", "action"}
SITE_QUASI_IDENTIFIER = "site"


class ProfileError(Exception):
    """The export profiles are broken; `problems` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("The export profiles are invalid:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True, slots=True)
class QuasiIdentifier:
    """A variable an attacker may already know (site, sex, gestational-age band...).

    `field` is None for the site; `bands` are the lower edges of the bands after the
    first, e.g. (28, 32, 37) gives <28, 28-31, 32-36, >=37 for whole weeks.
    """

    name: str
    field: str | None = None
    bands: tuple[float, ...] = ()

    def band(self, value: float) -> str:
        """The band a value falls in, as shown in the disclosure report."""
        lower: float | None = None
        for edge in self.bands:
            if value < edge:
                return f"<{_number(edge)}" if lower is None else f"{_number(lower)}-<{_number(edge)}"
            lower = edge
        return f">={_number(lower)}" if lower is not None else _number(value)


@dataclass(frozen=True, slots=True)
class DisclosureRule:
    """k-anonymity check over the quasi-identifiers; small cells are suppressed or refused.

    `exempt` (logic in the study's syntax) excludes records whose details are public
    already, such as published cases: they are neither counted nor suppressed.
    """

    k: int
    quasi_identifiers: tuple[QuasiIdentifier, ...]
    action: str
    exempt: str | None = None
    exempt_tree: Expr | None = None

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(q.field for q in self.quasi_identifiers if q.field)

    @property
    def includes_site(self) -> bool:
        return any(q.field is None for q in self.quasi_identifiers)


@dataclass(frozen=True, slots=True)
class DateRule:
    """How dates leave: `relative` (days from a per-record day 0), `shift` (every date of
    a record moved back by the same secret 1-364 days) or `keep` (identified profiles)."""

    mode: str
    anchor: tuple[str, ...] = ()
    age_from: str | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    label: str
    description: str
    access: str
    instruments: tuple[str, ...]
    exclude_fields: frozenset[str]
    layout: str
    repeatable: str
    main_table: str
    record_id: str
    site: str
    identifiers: str
    free_text: str
    keep_free_text: frozenset[str]
    dates: DateRule
    disclosure: DisclosureRule | None

    @property
    def deidentified(self) -> bool:
        return self.access == "deidentified"

    @property
    def per_site(self) -> bool:
        """A site profile exports exactly one site, named when the export is made."""
        return self.access == "site"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


class _Reader:
    """Reads one profile file, collecting every problem with the file and key it concerns."""

    def __init__(self, path: Path, study: Study, problems: list[str]) -> None:
        self.path = path
        self.study = study
        self.problems = problems
        self.shown = f"{path.parent.name}/{path.name}"

    def bad(self, key: str, message: str) -> None:
        self.problems.append(f"{self.shown}, {key}: {message}")

    def mapping(self, value: Any, key: str, allowed: set[str]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.bad(key, "must be a mapping")
            return {}
        for unknown in sorted(set(value) - allowed, key=str):
            self.bad(f"{key}.{unknown}" if key else str(unknown), f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return value

    def choice(self, value: Any, key: str, options: tuple[str, ...], default: str) -> str:
        if value is None:
            return default
        if value not in options:
            self.bad(key, f"{value!r} is not one of {', '.join(options)}")
            return default
        return str(value)

    def names(self, value: Any, key: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.bad(key, "must be a list of names")
            return []
        return list(value)

    def fields(self, value: Any, key: str, types: tuple[str, ...] | None = None) -> list[str]:
        names = self.names(value, key)
        for name in names:
            if not self.study.has_field(name):
                self.bad(key, f"'{name}' is not a field of the study")
            elif types and self.study.field(name).type not in types:
                self.bad(key, f"'{name}' is a {self.study.field(name).type} field, not {' or '.join(types)}")
        return [n for n in names if self.study.has_field(n)]

    def read(self, raw: Mapping[str, Any]) -> Profile:
        raw = self.mapping(raw, "", PROFILE_KEYS)
        access = self.choice(raw.get("access"), "access", ACCESS, "deidentified")
        instruments = self._instruments(raw.get("instruments", "all"))
        tables = self.mapping(raw.get("tables"), "tables", TABLE_KEYS)
        main = str(tables.get("main", "records"))
        if not TABLE_NAME_RE.match(main) or self.study.has_instrument(main):
            self.bad("tables.main", f"'{main}' must be a short lower-case name that is not an instrument's")
        profile = Profile(
            name=self.path.stem,
            label=str(raw.get("label") or self.path.stem),
            description=str(raw.get("description") or "").strip(),
            access=access,
            instruments=instruments,
            exclude_fields=frozenset(self.fields(raw.get("exclude_fields"), "exclude_fields")),
            layout=self.choice(tables.get("layout"), "tables.layout", LAYOUTS, "wide"),
            repeatable=self.choice(tables.get("repeatable"), "tables.repeatable", REPEATABLE, "tables"),
            main_table=main,
            record_id=self.choice(raw.get("record_id"), "record_id", RECORD_IDS, "pseudonym"),
            site=self.choice(raw.get("site"), "site", SITES, "pseudonym"),
            identifiers=self.choice(raw.get("identifiers"), "identifiers", KEEP_DROP, "drop"),
            free_text=self.choice(raw.get("free_text"), "free_text", KEEP_DROP, "drop"),
            keep_free_text=frozenset(self.fields(raw.get("keep_free_text"), "keep_free_text")),
            dates=self._dates(raw.get("dates")),
            disclosure=self._disclosure(raw.get("disclosure")) if "disclosure" in raw else None,
        )
        self._check_consistency(profile)
        return profile

    def _instruments(self, value: Any) -> tuple[str, ...]:
        if value == "all":
            return tuple(i.name for i in self.study.instruments)
        names = self.names(value, "instruments")
        for name in names:
            if not self.study.has_instrument(name):
                self.bad("instruments", f"'{name}' is not an instrument of the study")
        # Definition order, whatever order the profile lists them in.
        return tuple(i.name for i in self.study.instruments if i.name in names)

    def _dates(self, value: Any) -> DateRule:
        raw = self.mapping(value, "dates", DATE_KEYS)
        mode = self.choice(raw.get("mode"), "dates.mode", DATE_MODES, "relative")
        anchor = tuple(self.fields(raw.get("anchor"), "dates.anchor", DATE_TYPES))
        age_from = raw.get("age_from")
        if age_from is not None:
            age_from = next(iter(self.fields([age_from], "dates.age_from", ("date",))), None)
        return DateRule(mode=mode, anchor=anchor, age_from=age_from)

    def _disclosure(self, value: Any) -> DisclosureRule:
        raw = self.mapping(value, "disclosure", DISCLOSURE_KEYS)
        k = raw.get("k", 3)
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            self.bad("disclosure.k", f"{k!r} must be a whole number of at least 2")
            k = 3
        quasi = tuple(self._quasi(item, f"disclosure.quasi_identifiers[{i}]")
                      for i, item in enumerate(raw.get("quasi_identifiers") or []))
        if not quasi:
            self.bad("disclosure.quasi_identifiers", "name at least one quasi-identifier")
        exempt = raw.get("exempt")
        tree = None
        if exempt is not None:
            try:
                tree = parse(str(exempt))
            except LogicError as exc:
                self.bad("disclosure.exempt", str(exc))
            else:
                for name in sorted(referenced_fields(tree)):
                    if not self.study.has_field(name):
                        self.bad("disclosure.exempt", f"'{name}' is not a field of the study")
                    elif self.study.instrument(self.study.field(name).instrument).repeatable:
                        self.bad("disclosure.exempt", f"'{name}' is on a repeatable form; use a once-per-record field")
        action = self.choice(raw.get("action"), "disclosure.action", DISCLOSURE_ACTIONS, "suppress")
        return DisclosureRule(k=k, quasi_identifiers=quasi, action=action,
                              exempt=None if exempt is None else str(exempt), exempt_tree=tree)

    def _quasi(self, item: Any, key: str) -> QuasiIdentifier:
        if item == SITE_QUASI_IDENTIFIER:
            return QuasiIdentifier(SITE_QUASI_IDENTIFIER)
        if isinstance(item, str):
            item = {"field": item}
        raw = self.mapping(item, key, {"field", "bands"})
        name = str(raw.get("field", ""))
        if not self.study.has_field(name):
            self.bad(key, f"'{name}' is not a field of the study (or 'site')")
            return QuasiIdentifier(name, name)
        if self.study.instrument(self.study.field(name).instrument).repeatable:
            self.bad(key, f"'{name}' is on a repeatable form; a quasi-identifier is once per record")
        bands = raw.get("bands") or []
        numbers = [b for b in bands if isinstance(b, int | float) and not isinstance(b, bool)]
        if len(numbers) != len(bands) or numbers != sorted(set(numbers)):
            self.bad(f"{key}.bands", "must be increasing numbers")
        if bands and self.study.field(name).type not in ("integer", "number", "calc"):
            self.bad(f"{key}.bands", f"'{name}' is not a numeric field")
        return QuasiIdentifier(name, name, tuple(float(b) for b in numbers))

    def _check_consistency(self, p: Profile) -> None:
        """A de-identified profile must not be able to let an identifier out, whatever else it says."""
        for name in sorted(p.keep_free_text):
            if self.study.field(name).identifier:
                self.bad("keep_free_text", f"'{name}' is an identifier; identifiers are governed by 'identifiers'")
        if p.dates.mode == "relative" and not p.dates.anchor:
            self.bad("dates.anchor", "relative dates need an anchor (day 0), e.g. the first calcium exposure")
        if p.disclosure and p.disclosure.includes_site and p.site == "drop":
            self.bad("disclosure.quasi_identifiers", "'site' is a quasi-identifier but the profile drops the site")
        if not p.deidentified:
            return
        rules = {"identifiers": (p.identifiers, "drop"), "record_id": (p.record_id, "pseudonym")}
        for key, (value, required) in rules.items():
            if value != required:
                self.bad(key, f"a de-identified profile needs '{required}', not '{value}'")
        if p.site == "code":
            self.bad("site", "a de-identified profile replaces the site code by a pseudonym or drops it")
        if p.dates.mode == "keep":
            self.bad("dates.mode", "a de-identified profile never lets a calendar date out: use relative or shift")
        if p.disclosure is None:
            self.bad("disclosure", "a de-identified profile needs a disclosure check")


def load_profiles(directory: Path, study: Study) -> dict[str, Profile]:
    """Every `*.yaml` profile in `directory`, validated; raise ProfileError listing all problems."""
    problems: list[str] = []
    profiles: dict[str, Profile] = {}
    for path in sorted(directory.glob("*.yaml")):
        reader = _Reader(path, study, problems)
        if not PROFILE_NAME_RE.match(path.stem):
            reader.bad("file name", "a profile name is lower-case letters, digits and underscores")
            continue
        try:
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=SafeLoader)  # noqa: S506 - a safe loader
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            reader.bad("file", f"not readable YAML ({type(exc).__name__})")
            continue
        profiles[path.stem] = reader.read(raw or {})
    if problems:
        raise ProfileError(problems)
    return profiles
