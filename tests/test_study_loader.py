"""The definition loader: the real study loads; every kind of broken file is named precisely."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app import create_app
from app.study import StudyDefinitionError, load_study

FORMS = Path(__file__).resolve().parent.parent / "forms"


def test_calcinosis_study_loads_with_all_instruments():
    study = load_study(FORMS)
    assert [i.name for i in study.instruments] == [
        "enrolment", "calcium_exposure", "lesion_presentation", "imaging_followup", "treatment", "outcome",
    ]
    assert study.instrument("calcium_exposure").repeatable
    assert study.instrument("imaging_followup").repeatable
    assert not study.instrument("outcome").repeatable
    assert {m.code for m in study.missing_codes} == {"UNK", "NR", "NA", "NASK"}
    assert {f.name for f in study.identifier_fields} == {"initials", "hospital_number", "dob", "nicu_admission_date"}
    assert study.field("skin_findings").choice_codes == ("1", "2", "3", "4", "5")
    assert study.field("diluted").choice_codes == ("1", "0")
    assert study.field("ga_weeks").min == 20 and study.field("ga_weeks").max == 45
    assert study.field("age_presentation_days").calculation_tree is not None
    assert study.field("ulcer_size_mm").branching_tree is not None
    assert study.definition_version.startswith("1.0.0+")


@pytest.fixture
def study_copy(tmp_path: Path) -> Path:
    target = tmp_path / "forms"
    shutil.copytree(FORMS, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"fixture text not found in {path.name}: {old!r}"
    path.write_text(text.replace(old, new, 1))


def _problems(directory: Path) -> list[str]:
    with pytest.raises(StudyDefinitionError) as info:
        load_study(directory)
    return info.value.problems


def test_unknown_type_names_file_line_and_field(study_copy: Path):
    _edit(study_copy / "instruments/outcome.yaml", "    type: yesno\n    required: true\n  - name: clinical",
          "    type: yesorno\n    required: true\n  - name: clinical")
    problems = _problems(study_copy)
    assert len(problems) == 1
    assert problems[0].startswith("forms/instruments/outcome.yaml line ")
    assert "field 'complete_resolution'" in problems[0]
    assert "unknown type 'yesorno'" in problems[0]


def test_branching_naming_a_missing_field(study_copy: Path):
    _edit(study_copy / "instruments/enrolment.yaml", "branching: \"[calcium_indication] = '3'\"",
          "branching: \"[calcium_indicatio] = '3'\"")
    problems = _problems(study_copy)
    assert any("field 'calcium_indication_other'" in p and "[calcium_indicatio], which is not a field" in p
               for p in problems)


def test_duplicate_variable_across_instruments(study_copy: Path):
    _edit(study_copy / "instruments/treatment.yaml", "  - name: treatment_other", "  - name: drug_other")
    problems = _problems(study_copy)
    assert any("treatment.yaml" in p and "field 'drug_other'" in p and "already in instrument 'calcium_exposure'" in p
               for p in problems)


def test_bad_choice_lists(study_copy: Path):
    path = study_copy / "instruments/imaging_followup.yaml"
    _edit(path, '      - {code: "2", label: Ultrasound}', '      - {code: "1", label: Ultrasound}')
    problems = _problems(study_copy)
    assert any("field 'imaging_modality'" in p and "choice code '1' is used twice" in p for p in problems)


def test_choice_list_missing_entirely(study_copy: Path):
    path = study_copy / "instruments/treatment.yaml"
    text = path.read_text()
    start = text.index("    choices:\n      - {code: \"1\", label: None")
    end = text.index("  - name: conservative_measures")
    path.write_text(text[:start] + text[end:])
    assert any("field 'treatment_type'" in p and "needs a list of choices" in p for p in _problems(study_copy))


def test_checkbox_syntax_on_a_non_checkbox_and_unknown_code(study_copy: Path):
    path = study_copy / "instruments/lesion_presentation.yaml"
    _edit(path, "branching: \"[skin_findings(3)] = '1'\"", "branching: \"[skin_findings(9)] = '1' or [sex(1)] = '1'\"")
    problems = _problems(study_copy)
    assert any("[skin_findings(9)] but skin_findings has no choice '9'" in p for p in problems)
    assert any("[sex(1)] but sex is not a checkbox" in p for p in problems)


def test_unparseable_logic_is_reported_with_the_field(study_copy: Path):
    path = study_copy / "instruments/calcium_exposure.yaml"
    _edit(path, "branching: \"[drug] = '3'\"", "branching: \"[drug] = = '3'\"")
    problems = _problems(study_copy)
    assert any("field 'drug_other'" in p and "branching:" in p for p in problems)


def test_typo_in_a_key_is_caught(study_copy: Path):
    _edit(study_copy / "instruments/outcome.yaml", "    required: true\n    branching: \"[complete_resolution] = '1'\"",
          "    requird: true\n    branching: \"[complete_resolution] = '1'\"")
    assert any("unknown key 'requird'" in p for p in _problems(study_copy))


def test_invalid_yaml_names_the_line(study_copy: Path):
    path = study_copy / "instruments/treatment.yaml"
    path.write_text(path.read_text() + "  - name: [unclosed\n")
    problems = _problems(study_copy)
    assert len(problems) == 1 and "treatment.yaml line" in problems[0] and "not valid YAML" in problems[0]


def test_logic_cannot_reach_into_another_repeatable_instrument(study_copy: Path):
    _edit(study_copy / "instruments/outcome.yaml", "branching: \"[complete_resolution] = '1'\"\n  - name: radiographic",
          "branching: \"[imaging_calcification] = '0'\"\n  - name: radiographic")
    assert any("repeatable instrument 'imaging_followup'" in p for p in _problems(study_copy))


def test_min_greater_than_max_and_bad_bound(study_copy: Path):
    _edit(study_copy / "instruments/enrolment.yaml", "    min: 20\n    max: 45", "    min: 45\n    max: 20")
    _edit(study_copy / "instruments/enrolment.yaml", "    min: 200\n    max: 7000", "    min: heavy\n    max: 7000")
    problems = _problems(study_copy)
    assert any("field 'ga_weeks'" in p and "min is greater than max" in p for p in problems)
    assert any("field 'birth_weight_g'" in p and "min: 'heavy' is not a whole number" in p for p in problems)


def test_all_problems_are_reported_together(study_copy: Path):
    _edit(study_copy / "instruments/outcome.yaml", "type: yesno\n    required: true\n  - name: clinical",
          "type: bogus\n    required: true\n  - name: clinical")
    _edit(study_copy / "instruments/treatment.yaml", "  - name: treatment_other", "  - name: drug_other")
    assert len(_problems(study_copy)) == 2


def test_app_refuses_to_start_with_a_broken_definition(study_copy: Path):
    _edit(study_copy / "instruments/outcome.yaml", "type: yesno\n    required: true\n  - name: clinical",
          "type: bogus\n    required: true\n  - name: clinical")
    with pytest.raises(StudyDefinitionError, match="unknown type 'bogus'"):
        create_app({"STUDY_DIR": str(study_copy), "SQLALCHEMY_DATABASE_URI": "sqlite://"})
