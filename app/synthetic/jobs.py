"""Synthetic data started from the browser: the bulk generator of `flask seed-synthetic` as a
background job (app/jobs), committing per batch as the command does."""

from __future__ import annotations

from flask import Flask

from app.auth.models import User
from app.errors import PermissionDenied
from app.extensions import db
from app.jobs import JobKind, RunningJob
from app.study import current_study
from app.synthetic.bulk import default_workers, seed_synthetic, site_code

SYNTHETIC_JOBS = JobKind("synthetic", noun="synthetic data job", unexpected="Adding synthetic data failed because "
                         "of an error on the server; it is in the server's log. The batches written before it "
                         "are kept (whole records, with their audit rows).")
MAX_SITES = 999
MAX_RECORDS = 100_000
#: Sites linked from the summary of a finished job; the rest are on Home.
MAX_LINKS = 50


def _require_admin(user: User) -> None:
    if not user.is_admin:
        raise PermissionDenied("Only an admin adds synthetic data.")


def start_seeding(app: Flask, user: User, *, sites: int, records: int, seed: int) -> str:
    """Start adding `records` synthetic cases over `sites` synthetic sites in a thread; return the job id."""
    _require_admin(user)
    return SYNTHETIC_JOBS.start(app, user, _seed, phase="writing", total=records,
                                params={"sites": sites, "records": records, "seed": seed})


def _seed(job: RunningJob, user: User) -> None:
    """The work: as the command, one commit per batch, so the chain's head lock is held briefly."""
    _require_admin(user)  # again: the role may have changed since the request
    params = job.state.params
    for written in seed_synthetic(db.session, current_study(), sites=params["sites"], records=params["records"],
                                  seed=params["seed"], workers=default_workers(),
                                  study_dir=job.app.config["STUDY_DIR"]):
        db.session.commit()
        job.advance(written)
    codes = [site_code(number) for number in range(1, min(params["sites"], MAX_LINKS) + 1)]
    job.update(phase="done", result={"sites": codes, "more": max(0, params["sites"] - MAX_LINKS)},
               message=f"{params['records']:,} synthetic records added at {params['sites']} synthetic site(s).")
