"""Who may export what, and making an export: census, files, manifest, zip bundle, audit row.

An export runs in two passes over the records, each in batches by record id. The first
(census) reads only the forms holding quasi-identifiers and keeps only counts: the
disclosure check is complete before anything is written, so a refusing profile writes
nothing and a suppressing one knows which cells to suppress. The second pass writes
every format batch by batch. Services flush but never commit: the web request or the
CLI command commits the audit row at its boundary.
"""

from __future__ import annotations

import functools
import hashlib
import json
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import __version__
from app.analysis.services import write_analysis_html
from app.audit.services import AuditEntry, append
from app.auth.models import Site, SiteRole, User
from app.db import utcnow
from app.errors import CasebookError, NotFoundError, PermissionDenied
from app.exports.disclosure import SUPPRESSED, DisclosureCheck, DisclosureReport, ExportRefused
from app.exports.documents import codebook_rows, write_codebook_csv, write_codebook_html, write_datapackage
from app.exports.formats import CsvWriter, MissingCodes, ParquetWriter, write_spss, write_stata
from app.exports.odm import OdmWriter
from app.exports.plan import Column, Plan, PlanError, Table
from app.exports.prepare import Preparer
from app.exports.profiles import Profile, ProfileError, load_profiles
from app.exports.pseudonyms import Pseudonymiser, load_key
from app.exports.source import (
    SourceRecord,
    count_records,
    each_batch,
    first_records,
    instance_counts,
    iter_first_forms,
    site_counts,
)
from app.study.definition import Study

PROFILES_EXTENSION = "casebook.export_profiles"
PREVIEW_ROWS = 10
Progress = Callable[[int], None]


class ExportRequestError(CasebookError):
    """The request does not fit the profile (a site named for a pooled profile, or none for a site one)."""


def init_profiles(app: Flask) -> None:
    """Load and validate `exports/*.yaml` at start-up, like the forms: a broken profile stops the app."""
    study = app.extensions["casebook.study"]
    profiles = load_profiles(Path(app.config["EXPORTS_DIR"]), study)
    problems = []
    for profile in profiles.values():
        try:
            Plan(study, profile)
        except PlanError as exc:
            problems.append(str(exc))
    if problems:
        raise ProfileError(problems)
    app.extensions[PROFILES_EXTENSION] = profiles


def all_profiles() -> dict[str, Profile]:
    return current_app.extensions[PROFILES_EXTENSION]


def get_profile(name: str) -> Profile:
    profile = all_profiles().get(name)
    if profile is None:
        raise NotFoundError("No such export profile.")
    return profile


# -- access ------------------------------------------------------------------------------------


def _investigator_sites(user: User) -> set[int]:
    return {m.site_id for m in user.memberships if m.role == SiteRole.INVESTIGATOR}


def may_use(user: User, profile: Profile) -> bool:
    """Statisticians: de-identified profiles only. Investigators: site profiles, for their own
    sites. Admins: everything. Coordinators and monitors: no export at all."""
    if user.is_admin:
        return True
    if profile.deidentified:
        return user.is_statistician
    return bool(_investigator_sites(user))


def usable_profiles(user: User) -> list[Profile]:
    return [p for p in all_profiles().values() if may_use(user, p)]


def export_sites(session: Session, user: User) -> list[Site]:
    """The sites whose identified data `user` may export (all for an admin)."""
    stmt = select(Site).order_by(Site.code)
    if not user.is_admin:
        stmt = stmt.where(Site.id.in_(_investigator_sites(user)))
    return list(session.scalars(stmt))


@dataclass(frozen=True, slots=True)
class ExportScope:
    profile: Profile
    site: Site | None = None

    @property
    def site_ids(self) -> set[int] | None:
        return None if self.site is None else {self.site.id}


def resolve_scope(session: Session, user: User | None, profile: Profile, site_code: str | None) -> ExportScope:
    """Check that `user` (None: the command line, i.e. the server's operator) may make this export."""
    if user is not None and not may_use(user, profile):
        raise PermissionDenied("Your role cannot make this export.")
    if not profile.per_site:
        if site_code:
            raise ExportRequestError(f"The {profile.name} profile pools every site; do not name a site.")
        return ExportScope(profile)
    if not site_code:
        raise ExportRequestError(f"The {profile.name} profile exports one site: name the site.")
    site = session.scalar(select(Site).where(Site.code == site_code.strip().upper()))
    allowed = None if user is None or user.is_admin else _investigator_sites(user)
    if site is None or (allowed is not None and site.id not in allowed):
        raise NotFoundError("No such site.")
    return ExportScope(profile, site)


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked for the export, as the manifest and the audit trail name them."""

    username: str
    role: str
    user_id: int | None = None
    source: str = "web"

    @classmethod
    def of(cls, user: User) -> Requester:
        role = user.study_role.value if user.study_role else ", ".join(sorted({m.role.value for m in user.memberships}))
        return cls(user.username, role, user.id)


COMMAND_LINE = Requester("cli", "server operator (command line)", None, "cli")


# -- the export ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preview:
    columns: tuple[Column, ...]
    rows: list[list[str]]
    site_counts: list[tuple[str, int]]
    table_rows: dict[str, int]
    disclosure: DisclosureReport | None
    total: int


@dataclass(frozen=True, slots=True)
class ExportResult:
    path: Path
    download_name: str
    sha256: str
    manifest: dict[str, Any]


class ExportJob:
    """One export of one scope: the census runs on creation; `preview` and `write` follow."""

    def __init__(self, session: Session, study: Study, scope: ExportScope) -> None:
        self.session = session
        self.study = study
        self.scope = scope
        self.profile = profile = scope.profile
        self.pseudonyms = Pseudonymiser(load_key(Path(current_app.instance_path)), study.id)
        site_ids = scope.site_ids
        self.total = count_records(session, site_ids)
        self.check = DisclosureCheck(profile.disclosure, study) if profile.disclosure else None
        self.disclosure = self._census(self.check) if self.check else None
        # Only a wide layout with a column per instance needs the largest instance numbers now.
        sized = profile.layout == "wide" and profile.repeatable == "columns"
        self.plan = Plan(study, profile, {name: largest for name, (_, largest) in self.instances.items()}
                         if sized else None)
        self.preparer = Preparer(self.plan, self.pseudonyms, self.check)
        needed = set(profile.instruments) | {study.field(n).instrument for n in profile.dates.anchor}
        if profile.dates.age_from:
            needed.add(study.field(profile.dates.age_from).instrument)
        self.instruments = needed | (self.check.instruments if self.check else set())
        codes = (*study.missing_codes, *((SUPPRESSED,) if self.plan.suppressible or self.plan.suppress_site else ()))
        self.missing = MissingCodes(codes)

    @functools.cached_property
    def instances(self) -> dict[str, tuple[int, int]]:
        """Per repeatable instrument of the profile: (instances, largest instance number)."""
        repeats = [n for n in self.profile.instruments if self.study.instrument(n).repeatable]
        return instance_counts(self.session, self.scope.site_ids, repeats)

    def _census(self, check: DisclosureCheck) -> DisclosureReport:
        for site_code, forms in iter_first_forms(self.session, self.scope.site_ids, check.instruments):
            check.add(site_code, forms)
        return check.finish()

    @property
    def refused(self) -> bool:
        return self.disclosure is not None and self.disclosure.refused

    def table_rows(self) -> dict[str, int]:
        counts = {}
        for table in self.plan.tables:
            if table.instrument:
                counts[table.name] = self.instances[table.instrument][0]
            else:
                counts[table.name] = self.total + (sum(n for n, _ in self.instances.values()) if table.long else 0)
        return counts

    def _site_name(self, code: str) -> str:
        if self.profile.site == "pseudonym":
            return self.pseudonyms.site(code)
        return code if self.profile.site == "code" else "all sites"

    def preview(self, limit: int = PREVIEW_ROWS) -> Preview:
        """First rows of the main table (none if the export is refused), counts, the disclosure check."""
        table = self.plan.main_table()
        rows: list[list[str]] = []
        if not self.refused:
            batch = first_records(self.session, self.scope.site_ids, self.instruments, limit)
            for row in self.plan.block(table, [self.preparer.view(rec) for rec in batch]).rows():
                rows.append([_shown(c, cell) for c, cell in zip(table.columns, row, strict=True)])
        counts: Counter[str] = Counter()
        for code, n in site_counts(self.session, self.scope.site_ids):
            counts[self._site_name(code)] += n
        return Preview(table.columns, rows[:limit], sorted(counts.items()), self.table_rows(), self.disclosure,
                       self.total)

    def write(self, out: Path, requester: Requester, progress: Progress | None = None) -> ExportResult:
        """Write the zip bundle to `out` and append the audit row (flushed, not committed)."""
        report = self.disclosure
        if report is not None and report.refused:
            raise ExportRefused(
                f"Export refused: {report.small_combinations} combination(s) of quasi-identifiers have fewer "
                f"than {report.k} records, and this profile refuses rather than suppresses."
            )
        created = utcnow()
        with TemporaryDirectory(prefix="casebook-export-") as tmp:
            root, work = Path(tmp) / "bundle", Path(tmp) / "work"
            root.mkdir()
            work.mkdir()
            sites = [] if self.profile.site == "drop" else [
                self._site_name(code) for code, _ in site_counts(self.session, self.scope.site_ids)]
            bundle = _Bundle(root, work, self.plan, self.missing, created, sites)
            if self.check:
                self.check.begin_export()

            def add(batch: list[SourceRecord]) -> None:
                bundle.add([self.preparer.view(rec) for rec in batch])
                if progress:
                    progress(len(batch))

            each_batch(self.session, self.scope.site_ids, self.instruments, add)
            bundle.finish()
            if self.check:
                self.check.verify()
            manifest = self._manifest(requester, created, bundle)
            (root / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
            with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for path in sorted(root.rglob("*")):
                    if path.is_file():
                        archive.write(path, path.relative_to(root).as_posix())
        digest = _sha256(out)
        append(self.session, [AuditEntry(
            action="export", user_id=requester.user_id, username=requester.username,
            site_id=self.scope.site.id if self.scope.site else None, source=requester.source,
            reason=f"Export with profile {self.profile.name}",
            new=json.dumps({"profile": self.profile.name, "records": self.total, "rows": bundle.rows,
                            "bundle_sha256": digest,
                            "files": {name: meta["sha256"] for name, meta in manifest["files"].items()}},
                           separators=(",", ":")),
        )])
        site_part = f"-{self.scope.site.code}" if self.scope.site else ""
        name = f"{self.study.id}-{self.profile.name}{site_part}-{created:%Y%m%dT%H%M%SZ}.zip"
        return ExportResult(out, name, digest, manifest)

    def _manifest(self, requester: Requester, created: datetime, bundle: _Bundle) -> dict[str, Any]:
        p = self.profile
        removed_identifiers = [f.name for f in self.study.identifier_fields if not self.plan.exported(f)]
        removed_text = [f.name for f in self.study.iter_fields()
                        if f.is_free_text and not f.identifier and not self.plan.exported(f)]
        return {
            "profile": {"name": p.name, "label": p.label, "access": p.access, "layout": p.layout,
                        "repeatable": p.repeatable},
            "exported_by": {"username": requester.username, "role": requester.role, "source": requester.source},
            "exported_at": created.isoformat(timespec="seconds"),
            "software": {"name": "Casebook", "version": __version__},
            "study": {"id": self.study.id, "name": self.study.name, "protocol": self.study.protocol,
                      "definition_version": self.study.definition_version},
            "scope": {"site": self.scope.site.code if self.scope.site else None, "records": self.total},
            "de_identification": {
                "identifier_fields_removed": removed_identifiers,
                "free_text_fields_removed": removed_text,
                "record_id": "pseudonym (HMAC-SHA-256, key held outside the database)"
                if p.record_id == "pseudonym" else "record ID",
                "site": p.site,
                "dates": {"mode": p.dates.mode, "anchor": list(p.dates.anchor), "age_from": p.dates.age_from},
            },
            "tables": {t.name: {"rows": bundle.rows[t.name], "columns": len(t.columns)} for t in self.plan.tables},
            "disclosure_check": self.disclosure.as_dict() if self.disclosure else
            {"result": "not applicable: identified data of one site"},
            "missing_codes": {m.code: m.label for m in self.missing.codes},
            "files": {name: {"sha256": _sha256(root_path), "bytes": root_path.stat().st_size}
                      for name, root_path in bundle.files()},
        }


class _Bundle:
    """The bundle's files while they are written; Stata, SPSS and the documents come at `finish`."""

    def __init__(self, root: Path, work: Path, plan: Plan, missing: MissingCodes, created: datetime,
                 sites: list[str]) -> None:
        self.root, self.work, self.plan, self.missing, self.created = root, work, plan, missing, created
        for folder in ("csv", "csv_labels", "parquet", "stata", "spss", "odm"):
            (root / folder).mkdir()
        self.rows: dict[str, int] = dict.fromkeys((t.name for t in plan.tables), 0)
        self.writers: dict[str, tuple[CsvWriter, CsvWriter, ParquetWriter]] = {
            t.name: (
                CsvWriter(root / "csv" / f"{t.name}.csv", t, labels=False),
                CsvWriter(root / "csv_labels" / f"{t.name}.csv", t, labels=True),
                ParquetWriter(root / "parquet" / f"{t.name}.parquet", work / f"{t.name}.codes.parquet", t),
            )
            for t in plan.tables
        }
        self.odm = OdmWriter(
            root / "odm" / f"{plan.profile.name}.xml", plan, file_oid=f"{plan.study.id}.{plan.profile.name}."
            f"{created:%Y%m%dT%H%M%SZ}", created=created, software_version=__version__,
            missing_labels=missing.labels, sites=sites,
        )

    def add(self, views: list[Any]) -> None:
        for table in self.plan.tables:
            block = self.plan.block(table, views)
            for writer in self.writers[table.name]:
                writer.write(block)
            self.rows[table.name] += block.size
        self.odm.write(views)

    def finish(self) -> None:
        for table in self.plan.tables:
            for writer in self.writers[table.name]:
                writer.close()
            self._statistical(table)
        self.odm.close()
        write_analysis_html(self.root, self.plan)  # pooled bundles only; from the Parquet tables just closed
        rows = codebook_rows(self.plan, self.missing)
        write_codebook_csv(self.root / "codebook.csv", rows)
        csv_paths = {t.name: f"csv/{t.name}.csv" for t in self.plan.tables}
        write_datapackage(self.root / "datapackage.json", self.plan, self.plan.profile, csv_paths, self.created)
        listing = [name for name, _ in self.files()] + ["codebook.html", "manifest.json"]
        write_codebook_html(self.root / "codebook.html", self.plan, rows, self.missing, self.created, sorted(listing))

    def _statistical(self, table: Table) -> None:
        values = self.root / "parquet" / f"{table.name}.parquet"
        codes = self.work / f"{table.name}.codes.parquet"
        label = f"{self.plan.study.name}: {table.label}"
        write_stata(values, codes, self.root / "stata" / f"{table.name}.dta", table, self.missing, label)
        write_spss(values, codes, self.root / "spss" / f"{table.name}.sav", table, self.missing, label)

    def files(self) -> list[tuple[str, Path]]:
        return [(p.relative_to(self.root).as_posix(), p) for p in sorted(self.root.rglob("*"))
                if p.is_file() and p.name != "manifest.json"]


def _shown(column: Column, cell: tuple[Any, str | None]) -> str:
    value, code = cell
    if code:
        return f"[{code}]"
    if value is None:
        return ""
    return column.label_of(value) or str(value)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
