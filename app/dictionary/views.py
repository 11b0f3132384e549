"""The admin page for the data dictionary: download it, or check an uploaded one and get its forms/.

Uploading never changes the running study (the definition is read at start-up and
validated then): the page reports what maps and what does not, and hands back the
`forms/` folder as a zip for the data manager to review, commit and deploy.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime

from flask import Blueprint, Response, abort, render_template, request
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import StringField

from app.dictionary.importer import DictionaryError, StudyDefinitionError, check_definition, read_dictionary
from app.dictionary.rows import dictionary_csv
from app.study import current_study

bp = Blueprint("dictionary", __name__, url_prefix="/admin/dictionary")


class UploadForm(FlaskForm):
    file = FileField("REDCap data dictionary (CSV)", validators=[FileRequired("Choose a CSV file.")])
    repeatable = StringField("Repeating instruments", description="Names separated by commas, for instruments "
                             "not in the current study (REDCap's dictionary does not say which repeat).")


@bp.before_request
@login_required
def _admins_only() -> None:
    if not current_user.is_admin:
        abort(403, "Only an admin manages the data dictionary.")


@bp.route("/", methods=["GET", "POST"])
def page() -> str | Response | tuple[str, int]:
    form = UploadForm()
    if not form.validate_on_submit():
        return render_template("api/dictionary.html", form=form, report=None, problems=None), (
            422 if request.method == "POST" else 200)
    try:
        text = form.file.data.read().decode("utf-8")
        repeatable = [name.strip() for name in (form.repeatable.data or "").split(",") if name.strip()]
        definition = read_dictionary(text, current_study(), repeatable)
        check_definition(definition)
    except UnicodeDecodeError:
        problems = ["The file is not UTF-8 text: save it as 'CSV UTF-8'."]
    except DictionaryError as exc:
        problems = [str(exc)]
    except StudyDefinitionError as exc:
        problems = exc.problems
    else:
        if request.form.get("action") == "download":
            return _zip(definition.files)
        return render_template("api/dictionary.html", form=form, report=definition, problems=None)
    return render_template("api/dictionary.html", form=form, report=None, problems=problems), 422


@bp.route("/export.csv")
def export() -> Response:
    study = current_study()
    name = f"{study.id}_DataDictionary_{datetime.now(UTC):%Y-%m-%d}.csv"
    return Response(dictionary_csv(study).encode("utf-8"), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _zip(files: dict[str, str]) -> Response:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative, text in sorted(files.items()):
            archive.writestr(f"forms/{relative}", text)
    return Response(buffer.getvalue(), mimetype="application/zip",
                    headers={"Content-Disposition": 'attachment; filename="forms.zip"'})
