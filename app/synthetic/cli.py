"""`flask seed-synthetic --sites S --records N [--seed X]`: synthetic cases for load tests and demos."""

from __future__ import annotations

import time

import click
from flask import current_app

from app.extensions import db
from app.study import current_study
from app.synthetic.bulk import DEFAULT_BATCH, default_workers, real_record_count, seed_synthetic


@click.command("seed-synthetic")
@click.option("--sites", type=click.IntRange(1, 999), required=True, help="Number of synthetic sites (SYN001, ...).")
@click.option("--records", type=click.IntRange(1), required=True, help="Records to add, spread evenly over the sites.")
@click.option("--seed", type=int, default=0, show_default=True, help="The same seed gives the same cases.")
@click.option("--batch-size", type=click.IntRange(1, 5000), default=DEFAULT_BATCH, show_default=True,
              help="Records per INSERT batch and per commit.")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="Processes that build cases while this one writes (default: the CPU count; 0 = none).")
@click.option("--yes", is_flag=True, help="Do not ask before adding synthetic records beside real ones.")
def seed_synthetic_command(
    sites: int, records: int, seed: int, batch_size: int, workers: int | None, yes: bool
) -> None:
    """Add realistic, valid synthetic cases (with queries, signatures and audit rows) at synthetic sites.

    Commits once per batch rather than once at the end: each batch holds the audit chain's
    head lock (which every other writer needs) only briefly, so the app keeps working during
    a long seed, and memory stays flat at 100,000 records. Every committed batch is whole
    records with a valid chain, so an interrupted seed leaves a consistent database.
    """
    from app.cli import transaction

    real = real_record_count(db.session)
    if real and not yes:
        click.confirm(f"The database holds {real} records at non-synthetic sites; pooled exports would include "
                      "the synthetic ones too. Add synthetic records anyway?", abort=True)
    if workers is None:
        workers = default_workers()
    started = time.perf_counter()
    with transaction(), click.progressbar(length=records, label=f"Seeding {records} synthetic records") as bar:
        for written in seed_synthetic(db.session, current_study(), sites=sites, records=records, seed=seed,
                                      batch_size=batch_size, workers=workers,
                                      study_dir=current_app.config["STUDY_DIR"]):
            db.session.commit()
            bar.update(written)
    seconds = time.perf_counter() - started
    click.echo(f"Added {records} synthetic records at {sites} site(s) in {seconds:.1f} s "
               f"({records / seconds:.0f} records/s).")
