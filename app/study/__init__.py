"""The study definition: loaded once per app from `forms/` and shared read-only."""

from flask import current_app

from app.study.definition import Choice, Field, Instrument, MissingCode, Study
from app.study.loader import StudyDefinitionError, load_study

__all__ = [
    "Choice",
    "Field",
    "Instrument",
    "MissingCode",
    "Study",
    "StudyDefinitionError",
    "current_study",
    "load_study",
]


def current_study() -> Study:
    """The study of the running app (loaded and validated in `create_app`)."""
    return current_app.extensions["casebook.study"]
