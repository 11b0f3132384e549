"""Demo sites, users and the three published cases, entered through the normal write path.

Idempotent: running it again creates only what is missing, so `make run` can call it
every time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import Site, SiteRole, StudyRole, User
from app.auth.services import SiteGrant, create_site, create_user
from app.records.models import FormInstance, FormStatus, Record
from app.records.services import Actor, Submission, create_record, save_form
from app.study.definition import Study

DEMO_PASSWORD = "demo-password-2026"  # noqa: S105 - printed for the demo on purpose
CASES_FILE = Path(__file__).with_name("published_cases.yaml")

DEMO_SITES = (
    ("KMU", "Keimyung University Dongsan Hospital, Daegu", "Asia/Seoul"),
    ("NTH", "Northgate Children's Hospital (demo)", "Europe/London"),
    ("RVH", "Riverside Women's and Children's Hospital (demo)", "America/Toronto"),
)


@dataclass(frozen=True, slots=True)
class DemoUser:
    username: str
    full_name: str
    role: str
    sites: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        where = f" at {', '.join(self.sites)}" if self.sites else " (whole study)"
        return f"{self.role}{where}"


DEMO_USERS = (
    DemoUser("admin", "Ada Admin", StudyRole.ADMIN.value),
    DemoUser("coordinator", "Cora Coordinator", SiteRole.COORDINATOR.value, ("KMU",)),
    DemoUser("investigator", "Ivan Investigator", SiteRole.INVESTIGATOR.value, ("KMU",)),
    DemoUser("monitor", "Mona Monitor", SiteRole.MONITOR.value, ("KMU", "NTH")),
    DemoUser("statistician", "Stan Statistician", StudyRole.STATISTICIAN.value),
    DemoUser("coordinator_nth", "Nia Coordinator", SiteRole.COORDINATOR.value, ("NTH",)),
)


def load_demo(session: Session, study: Study) -> list[str]:
    """Create what is missing of the demo; return a line per thing created."""
    report: list[str] = []
    for code, name, zone in DEMO_SITES:
        if session.scalar(select(Site).where(Site.code == code)) is None:
            create_site(session, code, name, zone, by="demo")
            report.append(f"site {code} created")
    for demo in DEMO_USERS:
        if session.scalar(select(User).where(User.username == demo.username)) is None:
            site_role = demo.role in {r.value for r in SiteRole}
            create_user(
                session, demo.username, demo.full_name, DEMO_PASSWORD,
                study_role=None if site_role else StudyRole(demo.role),
                grants=[SiteGrant(code, SiteRole(demo.role)) for code in demo.sites],
                by="demo",
            )
            report.append(f"user {demo.username} created")
    report += load_published_cases(session, study)
    return report or ["demo data already present"]


def _case_forms(spec: dict[str, Any], case: dict[str, Any]) -> dict[str, Submission]:
    code = spec["not_reported"]
    forms: dict[str, Submission] = {}
    names = set(spec["common"]) | set(spec["not_reported_fields"])
    for instrument in sorted(names):
        values = {**spec["common"].get(instrument, {}), **case.get(instrument, {})}
        if instrument == "enrolment":
            values.update(literature_doi=spec["doi"], literature_case_number=str(case["number"]))
        missing = {name: code for name in spec["not_reported_fields"].get(instrument, [])}
        forms[instrument] = Submission(values=values, missing=missing, status=FormStatus.COMPLETE)
    return forms


def _already_entered(session: Session, site: Site, doi: str, number: int) -> bool:
    rows = session.scalars(
        select(FormInstance.data)
        .join(Record, Record.id == FormInstance.record_id)
        .where(Record.site_id == site.id, FormInstance.instrument == "enrolment")
    )
    return any(d.get("literature_doi") == doi and d.get("literature_case_number") == number for d in rows)


def load_published_cases(session: Session, study: Study) -> list[str]:
    spec = yaml.safe_load(CASES_FILE.read_text(encoding="utf-8"))
    site = session.scalar(select(Site).where(Site.code == spec["site"]))
    coordinator = session.scalar(select(User).where(User.username == "coordinator"))
    if site is None or coordinator is None:
        return []
    actor = Actor(coordinator, source="demo")
    report = []
    for case in spec["cases"]:
        if _already_entered(session, site, spec["doi"], case["number"]):
            continue
        record = create_record(session, actor, site)
        forms = _case_forms(spec, case)
        for inst in study.instruments:  # definition order, so calcs see earlier forms
            if inst.name in forms:
                save_form(session, study, actor, record, inst.name, 1, forms[inst.name], expected_version=0)
        report.append(f"published case {case['number']} entered as {record.label}")
    return report
