"""The Data Import Tool's upload form: the file and REDCap's import options."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from wtforms import RadioField, SelectField, StringField
from wtforms.validators import Length

from app.api.imports import ImportOptions
from app.study.fieldtypes import select_choices


class ImportForm(FlaskForm):
    file = FileField("CSV file", validators=[
        FileRequired("Choose a CSV file."),
        FileAllowed(["csv"], "The file must be a CSV file (.csv): in Excel, save it as 'CSV UTF-8'."),
    ], description="REDCap's flat format: the column names of the template, one row per record (and one per "
                   "instance of a repeating form).")
    overwrite = RadioField("Blank values in the file", default="normal", choices=select_choices([
        ("normal", "Leave what is stored (normal)"),
        ("overwrite", "Erase what is stored (overwrite)"),
    ]))
    new_records = RadioField("Record IDs in the file", default="existing", choices=select_choices([
        ("existing", "Existing records: each row changes the record with that ID"),
        ("new", "New records: Casebook numbers them (auto-numbering); the IDs in the file only group the rows"),
    ]))
    date_format = SelectField("Dates in the file", default="YMD", choices=select_choices([
        ("YMD", "YYYY-MM-DD"), ("MDY", "M/D/YYYY (month first)"), ("DMY", "D/M/YYYY (day first)"),
    ]))
    reason = StringField("Reason for changing forms marked Complete", validators=[Length(max=500)],
                         description="Needed only if the file changes a form marked Complete; it is kept in the "
                                     "audit trail.")

    def options(self) -> ImportOptions:
        """The choices as the import service takes them (the API's overwriteBehavior, forceAutoNumber, ...)."""
        return ImportOptions(overwrite=self.overwrite.data == "overwrite",
                             force_auto_number=self.new_records.data == "new",
                             date_format=self.date_format.data or "YMD", reason=(self.reason.data or "").strip())
