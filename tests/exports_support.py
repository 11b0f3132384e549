"""Helpers shared by the export tests: entering records through the write path, making an
export, and reading a bundle back with independent readers."""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from flask import current_app
from sqlalchemy import select

from app.auth.models import Site, User
from app.exports.profiles import load_profiles
from app.exports.pseudonyms import Pseudonymiser, load_key
from app.exports.services import COMMAND_LINE, ExportJob, ExportScope, get_profile, resolve_scope
from app.extensions import db
from app.records.models import Record
from app.records.services import Actor, Submission, create_record, save_form
from app.study import current_study

# A fixed key (whatever the environment says), so no test writes instance/pseudonym_key and the
# pseudonyms and date shifts the tests meet are always the same.
os.environ["CASEBOOK_PSEUDONYM_KEY"] = "test-pseudonym-key-not-for-production-0123456789"

FormValues = dict[str, Any]


def admin() -> Actor:
    return Actor(db.session.scalar(select(User).where(User.username == "admin")))


def add_record(site_code: str, forms: dict[str, FormValues | list[FormValues]]) -> Record:
    """A record entered by the admin through create_record/save_form.

    `forms` maps an instrument to its values (a list for the instances of a repeatable
    form); a value `("code", "NR")` is a missing-data code instead of a value.
    """
    study = current_study()
    site = db.session.scalar(select(Site).where(Site.code == site_code))
    record = create_record(db.session, admin(), site)
    for inst in study.instruments:  # definition order, so calculations see earlier forms
        given = forms.get(inst.name)
        if given is None:
            continue
        for number, values in enumerate(given if isinstance(given, list) else [given], 1):
            plain = {k: v for k, v in values.items() if not isinstance(v, tuple)}
            codes = {k: v[1] for k, v in values.items() if isinstance(v, tuple)}
            save_form(db.session, study, admin(), record, inst.name, number,
                      Submission(values=plain, missing=codes, status=0), expected_version=0)
    return record


def pseudonyms() -> Pseudonymiser:
    return Pseudonymiser(load_key(Path(current_app.instance_path)), current_study().id)


@dataclass
class Bundle:
    """An unpacked export: member name -> bytes, with readers for its formats."""

    members: dict[str, bytes]
    path: Path

    @classmethod
    def open(cls, path: Path) -> Bundle:
        with zipfile.ZipFile(path) as archive:
            return cls({name: archive.read(name) for name in archive.namelist()}, path)

    def extract(self, name: str) -> Path:
        target = self.path.parent / f"{self.path.stem}-{name.replace('/', '_')}"
        target.write_bytes(self.members[name])
        return target

    def csv(self, table: str, *, labels: bool = False) -> pd.DataFrame:
        """As the codebook says to read it: only a blank is missing (NA is a code, Not applicable)."""
        folder = "csv_labels" if labels else "csv"
        return pd.read_csv(io.BytesIO(self.members[f"{folder}/{table}.csv"]), keep_default_na=False, na_values=[""])

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.members["manifest.json"])


def export(tmp_path: Path, profile: str, site: str | None = None, name: str = "bundle") -> Bundle:
    """Make an export as the command line does (the operator may use every profile)."""
    job = ExportJob(db.session, current_study(), resolve_scope(db.session, None, get_profile(profile), site))
    out = tmp_path / f"{name}.zip"
    job.write(out, COMMAND_LINE)
    return Bundle.open(out)


def write_profile(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def job_for(directory: Path, name: str) -> ExportJob:
    profile = load_profiles(directory, current_study())[name]
    return ExportJob(db.session, current_study(), ExportScope(profile))


#: The statisticians' default profile, for tests that vary it.
POOLED = (Path(__file__).resolve().parent.parent / "exports" / "pooled_case_series.yaml").read_text()
