"""`flask dictionary export` and `flask dictionary import FILE.csv`."""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from app.dictionary.importer import (
    DictionaryError,
    StudyDefinitionError,
    check_definition,
    read_dictionary,
    write_definition,
)
from app.dictionary.rows import dictionary_csv
from app.study import current_study

dictionary_cli = AppGroup("dictionary", help="Export or import the study definition as a REDCap data dictionary.")


@dictionary_cli.command("export")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File to write (default: standard output).")
def dictionary_export(output: Path | None) -> None:
    """Write the study definition as a REDCap data dictionary (CSV, REDCap's columns and order)."""
    text = dictionary_csv(current_study())
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_bytes(text.encode("utf-8"))
    click.echo(f"Data dictionary written to {output}", err=True)


@dictionary_cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the forms/ definition (default: instance/forms-imported).")
@click.option("--repeatable", multiple=True, help="An instrument that repeats (REDCap's dictionary does not say); "
                                                  "repeat the option for several.")
@click.option("--force", is_flag=True, help="Replace a definition already in the folder.")
def dictionary_import(file: Path, out: Path | None, repeatable: tuple[str, ...], force: bool) -> None:
    """Read a REDCap data dictionary into a forms/ definition, reporting what could not be mapped.

    Study settings (name, missing-data codes) and instrument labels and repeat settings
    come from the running study where an instrument of the same name exists.
    """
    target = out or Path(current_app.instance_path) / "forms-imported"
    if target.exists() and any(target.iterdir()) and not force:
        raise click.ClickException(f"{target} is not empty; use --force to replace the definition in it.")
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise click.ClickException(f"{file} is not UTF-8 text; save it from REDCap or your spreadsheet as "
                                   "CSV UTF-8.") from None
    try:
        definition = read_dictionary(text, current_study(), repeatable)
        check_definition(definition, keep_from=target)
    except DictionaryError as exc:
        raise click.ClickException(str(exc)) from None
    except StudyDefinitionError as exc:
        raise click.ClickException("The imported definition would not load:\n  - " + "\n  - ".join(exc.problems)) \
            from None
    target.mkdir(parents=True, exist_ok=True)
    write_definition(definition, target)
    click.echo(definition.report())
    click.echo(f"Definition written to {target}. Check it with CASEBOOK_STUDY_DIR={target} flask study check")
