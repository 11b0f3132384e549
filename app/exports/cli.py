"""`flask export PROFILE --out PATH [--site CODE]`: the same bundle as the web page, for the server's operator.

The command line runs with the server's own rights (whoever can run it can read the
database), so it may use every profile; the export is audited with source "cli". The
zip is written next to PATH and moved into place only after the audit row is committed.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from app.exports.services import COMMAND_LINE, ExportJob, get_profile, resolve_scope
from app.extensions import db
from app.study import current_study


@click.command("export")
@click.argument("profile_name", metavar="PROFILE")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the zip bundle.")
@click.option("--site", "site_code", default=None, help="Site code, for a profile that exports one site.")
def export_command(profile_name: str, out: Path, site_code: str | None) -> None:
    """Export the study with a profile from exports/ into one zip bundle."""
    from app.cli import transaction

    partial = out.with_name(f".{out.name}.partial")
    try:
        with transaction():
            profile = get_profile(profile_name)
            job = ExportJob(db.session, current_study(), resolve_scope(db.session, None, profile, site_code))
            with click.progressbar(length=job.total, label=f"Exporting {job.total} records") as bar:
                result = job.write(partial, COMMAND_LINE, progress=bar.update)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    rows = ", ".join(f"{name} {n}" for name, n in ((t, m["rows"]) for t, m in result.manifest["tables"].items()))
    click.echo(f"Wrote {out} ({rows} rows); SHA-256 {result.sha256}")
