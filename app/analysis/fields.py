"""The fields the case-series analysis reads, named once, and the check that the study has them.

Only field *names* are named here (which fields play which part in the analysis); every
label, unit and choice label comes from the study definition, and `check_definition`
refuses to start the app when a named field is missing or of the wrong type.
"""

from __future__ import annotations

from app.study.definition import Study

#: Table 1, as in the published series: (section heading, fields).
TABLE1: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Patients", ("sex", "ga_weeks", "birth_weight_g", "age_presentation_days")),
    ("Exposure (first recorded infusion of each case)", ("drug", "concentration_pct", "line_type", "line_site")),
    ("Lesion", ("lesion_location", "nodule_count", "nodule_size_mm")),
)
#: The outcome table: resolution, sequelae, treatment.
OUTCOME_FIELDS = ("complete_resolution", "complications", "treatment_type", "conservative_measures")
RESOLVED = "complete_resolution"
TIME_TO_RESOLUTION = "time_to_resolution_days"
PRESENTED = "lesion_date"
LAST_FOLLOWUP = "last_followup_date"
DRUG = "drug"
CONCENTRATION = "concentration_pct"
#: Concentration groups for the survival curves: below / at or above 10 % w/v, the usual
#: strength of calcium gluconate for injection.
CONCENTRATION_CUTS = (10.0,)
COMPLICATIONS = "complications"
#: The code of the complications choice that means "no complication".
NO_COMPLICATION = "0"
IMAGED = "imaging_date"
CALCIFICATION = "imaging_calcification"
CALCIFICATION_SIZE = "imaging_size_mm"

#: Rows the analysis page's query fetches at a time.
STREAM_ROWS = 5000
YES = "1"
NO = "0"
ALL_SITES = "All sites"
NOT_ENTERED = "Not entered"
#: An empty statistic (no value to summarise): an em dash.
NO_VALUE = "\u2014"
#: A count hidden only so that a `<k` beside it cannot be worked out from the totals (ONS's mark).
CONFIDENTIAL = "[c]"
CONTINUOUS_TYPES = ("integer", "number", "calc")
CHOICE_TYPES = ("radio", "dropdown", "yesno", "checkbox")
#: Every field named above and the types the statistics assume of it.
EXPECTED_TYPES: dict[str, tuple[str, ...]] = {
    **{name: CONTINUOUS_TYPES + CHOICE_TYPES for _, names in TABLE1 for name in names},
    **dict.fromkeys(OUTCOME_FIELDS, CHOICE_TYPES),
    RESOLVED: ("yesno",), TIME_TO_RESOLUTION: CONTINUOUS_TYPES, PRESENTED: ("date", "datetime"),
    LAST_FOLLOWUP: ("date", "datetime"), DRUG: CHOICE_TYPES, CONCENTRATION: CONTINUOUS_TYPES,
    COMPLICATIONS: ("checkbox",), IMAGED: ("date", "datetime"), CALCIFICATION: ("yesno",),
    CALCIFICATION_SIZE: CONTINUOUS_TYPES,
}


class AnalysisDefinitionError(Exception):
    """The study definition lacks a field the analysis reads: the app must not start."""


def check_definition(study: Study) -> None:
    """Refuse a definition the analysis cannot read, naming every problem at once."""
    problems = []
    for name, types in EXPECTED_TYPES.items():
        if not study.has_field(name):
            problems.append(f"field '{name}' is not in the study definition")
        elif study.field(name).type not in types:
            problems.append(f"field '{name}' is a {study.field(name).type} field; expected {' or '.join(types)}")
    if study.has_field(COMPLICATIONS) and NO_COMPLICATION not in study.field(COMPLICATIONS).choice_codes:
        problems.append(f"field '{COMPLICATIONS}' has no choice '{NO_COMPLICATION}' (no complication)")
    if problems:
        raise AnalysisDefinitionError("The case-series analysis cannot read the study definition: "
                                      + "; ".join(problems))


def _instruments(study: Study) -> set[str]:
    return {study.field(name).instrument for name in EXPECTED_TYPES}


def read_fields(study: Study) -> dict[str, list[str]]:
    """Per instrument the analysis reads, the fields it reads, in definition order: the frames
    hold these only, so a large study's analysis keeps a few columns per case, not every field."""
    return {name: [f.name for f in study.instrument(name).data_fields if f.name in EXPECTED_TYPES]
            for name in _instruments(study)}
