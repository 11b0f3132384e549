"""Exports: the published cases reproduce the paper, every format reads back with an
independent reader, codes never become blanks, and the profiles' rules hold (identified
site export, date shifting, long layout, disclosure refusal, formula escaping, keys)."""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import os
import shutil
import stat
import statistics
from datetime import date, datetime
from pathlib import Path
from xml.etree import ElementTree

import odmlib
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyreadstat
import pytest
import xmlschema
from sqlalchemy import func, select

from app.auth.models import Site
from app.db import utcnow
from app.exports import disclosure, streaming
from app.exports.disclosure import ExportRefused
from app.exports.formats import MissingCodes, arrow_schema, write_spss, write_stata
from app.exports.plan import Column, Kind, Plan, PlanError, RecordView, Role, Table
from app.exports.profiles import ProfileError, load_profiles
from app.exports.pseudonyms import KEY_ENV, Pseudonymiser, PseudonymKeyError, load_key
from app.exports.services import COMMAND_LINE, get_profile
from app.exports.source import FormRow, SourceRecord, each_batch, first_records, iter_first_forms
from app.extensions import db
from app.records.models import Record
from app.study import current_study, load_study
from app.study.definition import MissingCode
from tests.conftest import make_app
from tests.exports_support import POOLED, Bundle, add_record, export, job_for, pseudonyms, write_profile

ODM_NS = {"odm": "http://www.cdisc.org/ns/odm/v1.3"}
SENTINEL = {"UNK": -999991.0, "NR": -999992.0, "NA": -999993.0, "NASK": -999994.0, "SUPP": -999995.0}
TAG = {"UNK": "a", "NR": "b", "NA": "c", "NASK": "d", "SUPP": "e"}
ROOT = Path(__file__).resolve().parent.parent

RICH = {
    "enrolment": {
        "case_source": "1", "enrolment_date": "2021-03-20", "initials": "QXZVBN", "hospital_number": "H-99887766",
        "dob": "2021-03-01", "sex": "1", "ga_weeks": "30", "ga_days": "4", "birth_weight_g": "1480",
        "nicu_admission_date": "2021-03-02", "calcium_indication": "3",
        "calcium_indication_other": "Exchange transfusion top-up", "serum_calcium_pre": "1.62",
        "ionised_calcium_pre": ("code", "UNK"),
    },
    "calcium_exposure": [
        {"drug": "1", "route": "1", "concentration_pct": "10", "dose_mg_kg": "200.5", "volume_ml": "4.2",
         "diluted": "1", "infusion_start": "2021-03-05 14:30", "line_type": "1", "line_site": "2", "line_side": "2",
         "extravasation_recognised": "1", "extravasation_date": "2021-03-06"},
        {"drug": "2", "route": "1", "concentration_pct": "5", "dose_mg_kg": ("code", "NR"),
         "infusion_start": "2021-03-04 08:00", "line_type": "2", "line_site": "1", "extravasation_recognised": "0"},
    ],
    "lesion_presentation": {
        "lesion_date": "2021-03-12", "nodule_count": "2", "nodule_size_mm": "12.5", "lesion_location": "2",
        "skin_findings": ["1", "3"], "ulcer_size_mm": ("code", "UNK"), "suspected_infection": "0",
        "initial_xray_done": "1", "initial_xray_date": "2021-03-13",
    },
    "imaging_followup": [{"imaging_date": "2021-04-10", "imaging_modality": "1", "imaging_calcification": "1",
                          "imaging_size_mm": "8"}],
    "treatment": {"treatment_type": "2", "conservative_measures": ["1", "2"]},
    "outcome": {"complete_resolution": "1", "clinical_resolution_date": "2021-05-01",
                "radiographic_resolution_date": "2021-05-20", "complications": ["0"],
                "outcome_notes": "Mother very worried", "last_followup_date": "2021-06-01"},
}
PHI = ("QXZVBN", "H-99887766", "2021-03-01", "2021-03-02", "Exchange transfusion", "Mother very worried")


def odm_schema() -> xmlschema.XMLSchema:
    """The ODM 1.3.2 schema shipped in the odmlib package, so validation works offline."""
    return xmlschema.XMLSchema(str(Path(odmlib.__file__).parent / "schemas/odm/1.3.2/ODM1-3-2.xsd"))


def row_of(frame: pd.DataFrame, key: str, column: str = "study_id") -> pd.Series:
    rows = frame[frame[column] == key]
    assert len(rows) == 1, f"{key} not found once"
    return rows.iloc[0]


# -- the published cases -----------------------------------------------------------------------


def test_published_cases_reproduce_the_reference_figures(demo, tmp_path):
    bundle = export(tmp_path, "pooled_case_series")
    cases = bundle.csv("cases")
    assert len(cases) == 3
    assert bundle.csv("cases", labels=True)["Sex"].value_counts().to_dict() == {"Female": 2, "Male": 1}
    assert sorted(cases["time_to_resolution_days"]) == [21, 28, 182]
    assert statistics.median(cases["time_to_resolution_days"]) == 28
    assert (cases["complete_resolution"] == 1).all() and (cases["treatment_type"] == 1).all()
    assert (cases["complications___0"] == 1).all()
    assert (cases[[f"complications___{c}" for c in "1234"]] == 0).all().all()
    exposures = bundle.csv("calcium_exposure")
    assert len(exposures) == 3 and (exposures["drug"] == 1).all()
    # What the paper does not give is coded "not reported", never a blank or an invented value.
    assert cases["ga_weeks"].isna().all() and (cases["ga_weeks_miss"] == "NR").all()
    assert cases["lesion_date_day"].isna().all() and (cases["lesion_date_miss"] == "NR").all()
    assert (cases["dob_miss"] == "NR").all() and "dob" not in cases
    # Study IDs are the keyed pseudonyms of the records, the same in the next export.
    expected = sorted(pseudonyms().subject(f"KMU-000{n}") for n in (1, 2, 3))
    assert sorted(cases["study_id"]) == expected
    assert sorted(export(tmp_path, "pooled_case_series", name="again").csv("cases")["study_id"]) == expected
    check = bundle.manifest["disclosure_check"]
    assert check["records_exempt"] == 3 and check["result"] == "passed"


# -- every format, read back independently -----------------------------------------------------


@pytest.fixture
def rich(demo, tmp_path):
    """The demo plus one prospective case at NTH, alone in its cell, so it is also suppressed."""
    add_record("NTH", RICH)
    return export(tmp_path, "pooled_case_series"), pseudonyms().subject("NTH-0001")


def test_csv_holds_the_source_values_deidentified(rich):
    bundle, key = rich
    case = row_of(bundle.csv("cases"), key)
    assert case["day0_source"] == "infusion_start"  # day 0 = 2021-03-04, the earlier infusion
    assert (case["lesion_date_day"], case["lesion_date_age"]) == (8, 11)
    assert (case["enrolment_date_day"], case["clinical_resolution_date_day"]) == (16, 58)
    assert case["time_to_resolution_days"] == 69 and case["age_presentation_days"] == 11
    assert (case["nodule_size_mm"], case["birth_weight_g"], case["serum_calcium_pre"]) == (12.5, 1480, 1.62)
    assert [case[f"skin_findings___{c}"] for c in "12345"] == [1, 0, 1, 0, 0]
    assert pd.isna(case["ulcer_size_mm"]) and case["ulcer_size_mm_miss"] == "UNK"
    # Alone in its site x sex x gestational-age cell: suppressed, and says so.
    for column in ("site", "sex", "ga_weeks"):
        assert pd.isna(case[column]) and case[f"{column}_miss"] == "SUPP"
    assert case["birth_weight_g_miss"] != "SUPP"
    exposures = bundle.csv("calcium_exposure")
    mine = exposures[exposures["study_id"] == key].set_index("instance")
    assert mine.loc[1, "infusion_start_day"] == pytest.approx(1 + 14.5 / 24)
    assert mine.loc[2, "infusion_start_day"] == pytest.approx(8 / 24)
    assert mine.loc[2, "dose_mg_kg_miss"] == "NR" and pd.isna(mine.loc[2, "dose_mg_kg"])
    assert bundle.manifest["disclosure_check"]["records_suppressed"] == 1
    blob = b"".join(bundle.members.values())
    for text in (*PHI, "NTH-0001", "KMU-0001", "2021-03-04"):
        assert text.encode() not in blob, text


def test_parquet_stata_and_spss_agree_with_the_csv(rich):
    bundle, _ = rich
    for table in ("cases", "calcium_exposure", "imaging_followup"):
        frame = bundle.csv(table)
        parquet = pq.read_table(bundle.extract(f"parquet/{table}.parquet")).to_pandas()
        stata = pd.read_stata(bundle.extract(f"stata/{table}.dta"), convert_categoricals=False)
        spss, meta = pyreadstat.read_sav(bundle.extract(f"spss/{table}.sav"))
        assert list(parquet.columns) == list(stata.columns) == list(spss.columns) == list(frame.columns)
        for column in frame.columns:
            expected = frame[column]
            if pd.api.types.is_numeric_dtype(parquet[column]):
                for reader, values in (("parquet", parquet[column]), ("stata", stata[column]),
                                       ("spss", spss[column])):
                    pd.testing.assert_series_equal(values.astype(float), expected.astype(float), check_names=False,
                                                   obj=f"{reader} {table}.{column}")
            else:
                text = ["" if pd.isna(v) else v for v in expected]
                assert parquet[column].fillna("").tolist() == text, column
                assert stata[column].tolist() == spss[column].tolist() == text, column
        assert meta.column_names_to_labels["study_id"] == "Study ID (pseudonymous)"


def test_stata_and_spss_keep_missing_codes_apart_from_blanks(rich):
    bundle, key = rich
    frame = bundle.csv("cases")
    index = frame.index[frame["study_id"] == key][0]
    path = bundle.extract("stata/cases.dta")
    stata = pd.read_stata(path, convert_missing=True, convert_categoricals=False)
    for column, code in (("ulcer_size_mm", "UNK"), ("ionised_calcium_pre", "UNK"), ("sex", "SUPP"),
                         ("ga_weeks", "SUPP")):
        assert stata.loc[index, column].string == f".{TAG[code]}", column
    assert stata.loc[index, "ga_days"] == 4
    published = stata.loc[frame.index[frame["study_id"] != key][0]]
    assert published["ga_weeks"].string == ".b" and published["nodule_size_mm"].string == ".b"
    with pd.io.stata.StataReader(path) as reader:
        reader.read()
        labels = reader.value_labels()
        assert reader.variable_labels()["nodule_size_mm"] == "Largest nodule, longest diameter"
    assert {"Male", "Female", "Not reported", "Suppressed (disclosure control)"} <= set(
        next(v for v in labels.values() if "Undetermined" in v.values()).values())

    spss, meta = pyreadstat.read_sav(bundle.extract("spss/cases.sav"), user_missing=True)
    assert spss.loc[index, "ulcer_size_mm"] == SENTINEL["UNK"] and spss.loc[index, "sex"] == SENTINEL["SUPP"]
    assert meta.missing_ranges["ulcer_size_mm"] == [{"lo": SENTINEL["SUPP"], "hi": SENTINEL["UNK"]}]
    assert meta.variable_value_labels["sex"][SENTINEL["NR"]] == "Not reported"
    assert meta.variable_value_labels["sex"][1.0] == "Male"
    plain, _ = pyreadstat.read_sav(bundle.extract("spss/cases.sav"))
    assert pd.isna(plain.loc[index, "ulcer_size_mm"])  # user-missing is missing to an analysis


def test_odm_is_valid_and_its_references_resolve(rich):
    bundle, key = rich
    name = "odm/pooled_case_series.xml"
    odm_schema().validate(bundle.extract(name))
    tree = ElementTree.fromstring(bundle.members[name])

    def oids(tag: str) -> set[str]:
        return {e.get("OID") for e in tree.iterfind(f".//odm:{tag}", ODM_NS)}

    refs = {"ItemRef": ("ItemOID", "ItemDef"), "ItemData": ("ItemOID", "ItemDef"),
            "ItemGroupRef": ("ItemGroupOID", "ItemGroupDef"), "ItemGroupData": ("ItemGroupOID", "ItemGroupDef"),
            "FormRef": ("FormOID", "FormDef"), "FormData": ("FormOID", "FormDef"),
            "CodeListRef": ("CodeListOID", "CodeList"), "FlagValue": ("CodeListOID", "CodeList"),
            "SiteRef": ("LocationOID", "Location"), "MeasurementUnitRef": ("MeasurementUnitOID", "MeasurementUnit")}
    for tag, (attribute, target) in refs.items():
        used = {e.get(attribute) for e in tree.iterfind(f".//odm:{tag}", ODM_NS)}
        assert used and used <= oids(target), tag
    subjects = {e.get("SubjectKey") for e in tree.iterfind(".//odm:SubjectData", ODM_NS)}
    assert subjects == set(bundle.csv("cases")["study_id"])
    subject = tree.find(f".//odm:SubjectData[@SubjectKey='{key}']", ODM_NS)
    assert subject.find("odm:SiteRef", ODM_NS) is None  # the site is suppressed
    ulcer = subject.find(".//odm:ItemData[@ItemOID='IT.ulcer_size_mm']", ODM_NS)
    assert ulcer.get("IsNull") == "Yes" and ulcer.findtext(".//odm:FlagValue", namespaces=ODM_NS) == "UNK"
    nodule = subject.find(".//odm:ItemData[@ItemOID='IT.nodule_size_mm']", ODM_NS)
    assert nodule.get("Value") == "12.5"
    repeats = subject.findall(".//odm:ItemGroupData[@ItemGroupOID='IG.calcium_exposure']", ODM_NS)
    assert [g.get("ItemGroupRepeatKey") for g in repeats] == ["1", "2"]


def test_manifest_datapackage_and_codebook_describe_the_files(rich):
    bundle, _ = rich
    manifest = bundle.manifest
    assert set(manifest["files"]) == set(bundle.members) - {"manifest.json"}
    for name, meta in manifest["files"].items():
        assert hashlib.sha256(bundle.members[name]).hexdigest() == meta["sha256"], name
    assert manifest["tables"]["cases"]["rows"] == 4 and manifest["tables"]["calcium_exposure"]["rows"] == 5
    assert manifest["study"]["definition_version"] == current_study().definition_version
    assert manifest["exported_by"]["source"] == "cli" and manifest["software"]["version"]
    assert {"initials", "hospital_number", "dob", "nicu_admission_date"} == set(
        manifest["de_identification"]["identifier_fields_removed"])
    package = json.loads(bundle.members["datapackage.json"])
    codebook = pd.read_csv(bundle.extract("codebook.csv"), keep_default_na=False)
    for resource in package["resources"]:
        header = list(bundle.csv(resource["name"]).columns)
        assert [f["name"] for f in resource["schema"]["fields"]] == header
        assert codebook[codebook["table"] == resource["name"]]["column"].tolist() == header
    exposures = next(r for r in package["resources"] if r["name"] == "calcium_exposure")
    assert exposures["schema"]["foreignKeys"][0]["reference"]["resource"] == "cases"
    sex = codebook[(codebook["table"] == "cases") & (codebook["column"] == "sex")].iloc[0]
    assert sex["values"] == "1=Male | 2=Female | 3=Undetermined" and "SUPP" in sex["missing_codes"]
    assert "Stata .b, SPSS -999992" in sex["missing_codes"]
    html = bundle.members["codebook.html"].decode()
    assert "time_to_resolution_days" in html and "Suppressed (disclosure control)" in html


# -- the identified site export ------------------------------------------------------------------


def test_site_full_keeps_identifiers_of_one_site_with_a_column_per_instance(demo, tmp_path):
    add_record("NTH", RICH)
    add_record("KMU", {**RICH, "enrolment": {**RICH["enrolment"], "initials": "KMZ"}})
    bundle = export(tmp_path, "site_full", "KMU")
    records = bundle.csv("records")
    assert sorted(records["record_id"]) == ["KMU-0001", "KMU-0002", "KMU-0003", "KMU-0004"]
    mine = row_of(records, "KMU-0004", "record_id")
    assert (mine["initials"], mine["dob"], mine["outcome_notes"]) == ("KMZ", "2021-03-01", "Mother very worried")
    assert (mine["infusion_start_1"], mine["infusion_start_2"]) == ("2021-03-05T14:30", "2021-03-04T08:00")
    assert mine["dose_mg_kg_miss_2"] == "NR" and mine["site"] == "KMU"
    assert "2021-03-05T14:30" in bundle.members["odm/site_full.xml"].decode()
    odm_schema().validate(bundle.extract("odm/site_full.xml"))
    stata = pd.read_stata(bundle.extract("stata/records.dta"))
    stata_row = stata[stata["record_id"] == "KMU-0004"].iloc[0]
    assert stata_row["dob"] == pd.Timestamp("2021-03-01")
    assert stata_row["infusion_start_1"] == pd.Timestamp("2021-03-05 14:30")
    spss, _ = pyreadstat.read_sav(bundle.extract("spss/records.sav"))
    assert spss[spss["record_id"] == "KMU-0004"].iloc[0]["dob"] == date(2021, 3, 1)
    assert bundle.manifest["disclosure_check"]["result"].startswith("not applicable")


# -- profiles read from files --------------------------------------------------------------------


def test_shifted_dates_keep_intervals_in_a_long_table(demo, tmp_path):
    profiles = tmp_path / "profiles"
    write_profile(profiles, "shifted", POOLED.replace("  layout: wide", "  layout: long").replace(
        "  mode: relative\n  anchor: [infusion_start, extravasation_date, lesion_date]\n", "  mode: shift\n"))
    add_record("NTH", RICH)
    outputs = []
    for name in ("one", "two"):
        job_for(profiles, "shifted").write(tmp_path / f"{name}.zip", COMMAND_LINE)
        outputs.append(Bundle.open(tmp_path / f"{name}.zip"))
    table = outputs[0].csv("cases")
    assert table.equals(outputs[1].csv("cases"))  # the same secret offset every time
    key = pseudonyms().subject("NTH-0001")
    mine = table[table["study_id"] == key]
    base = mine[mine["repeat_instrument"].isna()].iloc[0]
    exposures = mine[mine["repeat_instrument"] == "calcium_exposure"].set_index("repeat_instance")
    assert len(mine) == 4 and pd.isna(base["repeat_instance"]) and pd.isna(exposures.loc[1, "sex"])
    lesion = date.fromisoformat(base["lesion_date"])
    offset = (date(2021, 3, 12) - lesion).days
    assert offset == pseudonyms().shift_days("NTH-0001") and 1 <= offset <= 364
    assert (date.fromisoformat(base["clinical_resolution_date"]) - lesion).days == 50
    infusion = datetime.fromisoformat(exposures.loc[1, "infusion_start"])
    assert infusion == datetime(2021, 3, 5, 14, 30) - pd.Timedelta(days=offset)
    assert base["lesion_date_age"] == 11 and "dob" not in table
    blob = b"".join(outputs[0].members.values())
    for real in ("2021-03-12", "2021-03-05", "2021-05-01", "2021-03-01"):
        assert real.encode() not in blob


def test_small_cells_can_refuse_the_export(demo, tmp_path):
    profiles = tmp_path / "profiles"
    write_profile(profiles, "strict", POOLED.replace("action: suppress", "action: refuse"))
    add_record("NTH", RICH)
    job = job_for(profiles, "strict")
    assert job.refused and job.preview().rows == []
    with pytest.raises(ExportRefused, match="fewer than 3 records"):
        job.write(tmp_path / "refused.zip", COMMAND_LINE)
    assert not (tmp_path / "refused.zip").exists()


def test_records_changing_during_an_export_never_leave_a_small_cell(demo, tmp_path):
    same = {"enrolment": {"case_source": "1", "sex": "2", "ga_weeks": "39"}}
    records = [add_record("NTH", same) for _ in range(3)]
    job = job_for(Path(__file__).resolve().parent.parent / "exports", "pooled_case_series")
    assert job.disclosure.passed
    add_record("RVH", same)  # after the census: its cell was never counted, so it is suppressed
    job.write(tmp_path / "first.zip", COMMAND_LINE)
    cases = Bundle.open(tmp_path / "first.zip").csv("cases").set_index("study_id")
    assert cases.loc[pseudonyms().subject("RVH-0001"), "sex_miss"] == "SUPP"
    assert (cases.loc[[pseudonyms().subject(r.label) for r in records], "sex"] == 2).all()
    records[0].deleted_at = utcnow()  # the counted cell of three now leaves with two
    db.session.flush()
    with pytest.raises(ExportRefused, match="records changed while the export was being made"):
        job.write(tmp_path / "second.zip", COMMAND_LINE)
    assert not (tmp_path / "second.zip").exists()


def test_spreadsheet_formulas_are_escaped_and_numbers_stay_numbers(demo, tmp_path):
    add_record("KMU", {"enrolment": {"case_source": "3", "literature_doi": "=HYPERLINK(\"http://x\")",
                                     "enrolment_date": "2021-03-01"},
                       "calcium_exposure": [{"infusion_start": "2021-03-04 00:00"}]})
    bundle = export(tmp_path, "pooled_case_series")
    raw = bundle.members["csv/cases.csv"].decode()
    assert "\"'=HYPERLINK(\"\"http://x\"\")\"" in raw
    row = row_of(bundle.csv("cases"), pseudonyms().subject("KMU-0004"))
    assert row["enrolment_date_day"] == -3  # read back as a number: not escaped
    assert ",-3," in raw
    assert "'=HYPERLINK" in bundle.members["csv_labels/cases.csv"].decode()
    # Formats that are not spreadsheets keep the text as entered.
    parquet = pq.read_table(bundle.extract("parquet/cases.parquet")).to_pandas()
    assert '=HYPERLINK("http://x")' in parquet["literature_doi"].tolist()


def test_profile_problems_are_all_reported_with_file_and_key(tmp_path):
    profiles = tmp_path / "profiles"
    write_profile(profiles, "leaky", """
label: Leaky
access: deidentified
record_id: label
site: code
colour: blue
keep_free_text: [initials, nosuch]
dates: {mode: keep, anchor: [sex]}
disclosure:
  k: 1
  quasi_identifiers: [site, {field: ga_weeks, bands: [37, 28]}, drug]
  exempt: "[case_source] = "
""")
    write_profile(profiles, "Bad-Name", "label: x\n")
    app = make_app("sqlite://")
    with app.app_context(), pytest.raises(ProfileError) as caught:
        load_profiles(profiles, current_study())
    text = str(caught.value)
    for expected in ("profiles/leaky.yaml, record_id: a de-identified profile needs 'pseudonym'",
                     "leaky.yaml, site: a de-identified profile replaces the site code",
                     "leaky.yaml, dates.mode: a de-identified profile never lets a calendar date out",
                     "leaky.yaml, colour: unknown key", "leaky.yaml, keep_free_text: 'nosuch' is not a field",
                     "leaky.yaml, keep_free_text: 'initials' is an identifier",
                     "leaky.yaml, dates.anchor: 'sex' is a radio field, not date or datetime",
                     "leaky.yaml, disclosure.k: 1 must be a whole number of at least 2",
                     "quasi_identifiers[1].bands: must be increasing numbers",
                     "quasi_identifiers[2]: 'drug' is on a repeatable form",
                     "leaky.yaml, disclosure.exempt:", "Bad-Name.yaml, file name"):
        assert expected in text, expected


def test_app_refuses_to_start_with_a_broken_profile(tmp_path):
    profiles = tmp_path / "profiles"
    write_profile(profiles, "pooled", POOLED.replace("[literature_doi]", "[literature_doi, no_such_field]"))
    with pytest.raises(ProfileError, match="'no_such_field' is not a field of the study"):
        make_app("sqlite://", EXPORTS_DIR=str(profiles))


# -- the key ---------------------------------------------------------------------------------------


def test_key_is_generated_once_into_a_private_file(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    first = load_key(tmp_path / "instance")
    key_file = tmp_path / "instance" / "pseudonym_key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert load_key(tmp_path / "instance") == first and len(first) == 64
    monkeypatch.setenv(KEY_ENV, "too short")
    with pytest.raises(PseudonymKeyError, match="at least 32 characters"):
        load_key(tmp_path / "instance")


def test_pseudonyms_depend_on_the_key_and_the_purpose():
    one, other = Pseudonymiser(b"k" * 32, "nicc"), Pseudonymiser(b"j" * 32, "nicc")
    assert one.subject("KMU-0001") == one.subject("KMU-0001") != other.subject("KMU-0001")
    assert one.subject("KMU-0001") != one.subject("KMU-0002")
    assert one.site("KMU")[1:] not in one.subject("KMU")
    assert {one.shift_days(f"KMU-{n:04d}") for n in range(1, 400)} <= set(range(1, 365))


def test_pseudonyms_are_the_documented_hmac_so_exports_merge_across_versions():
    """A statistician merges this year's export with last year's by study ID: the derivation
    (HMAC-SHA-256 of purpose, study and value under the key) must never drift."""
    key = b"k" * 32
    made = Pseudonymiser(key, "nicc")

    def mac(message: str) -> bytes:
        return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()

    for label in ("KMU-0001", "NTH-0042", "Zürich-7"):
        assert made.subject(label) == "P" + mac(f"subject\x1fnicc\x1f{label}")[:8].hex()
        assert made.shift_days(label) == 1 + int.from_bytes(mac(f"date-shift\x1fnicc\x1f{label}")[:8], "big") % 364
    assert made.site("KMU") == "S" + mac("site\x1fnicc\x1fKMU")[:4].hex()


def test_stata_and_spss_read_columns_whose_first_hundred_rows_are_blank_or_coded(tmp_path):
    """pyreadstat guesses an object column's type from its first 100 cells; a numeric column
    whose early records hold only blanks and codes (a field added late, a fourth follow-up)
    or a date column blank in its first 100 rows was taken for text and the export failed."""
    codes = ("NR", "UNK")
    table = Table("late", "Late fields", (
        Column("size_mm", "Size", Kind.NUMBER, Role.VALUE, codes=codes),
        Column("seen", "Seen", Kind.DATE, Role.VALUE),
        Column("late_age", "Age", Kind.INTEGER, Role.AGE, codes=codes),
    ), ())
    n = 150
    sizes: list[float | None] = [None] * n
    size_codes: list[str | None] = [None] * n
    size_codes[20], sizes[130] = "NR", 2.5
    seen: list[date | None] = [None] * n
    seen[140] = date(2024, 2, 29)
    ages: list[int | None] = [None] * n
    age_codes: list[str | None] = ["UNK"] * n
    age_codes[149], ages[149] = None, 12
    values_path, codes_path = tmp_path / "late.parquet", tmp_path / "late.codes.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(sizes, pa.float64()), pa.array(seen, pa.date32()),
                                                 pa.array(ages, pa.int64())], schema=arrow_schema(table)), values_path)
    pq.write_table(pa.table({"size_mm": pa.array(size_codes, pa.string()),
                                     "late_age": pa.array(age_codes, pa.string())}), codes_path)
    missing = MissingCodes([MissingCode("NR", "Not reported"), MissingCode("UNK", "Unknown")])

    write_stata(values_path, codes_path, tmp_path / "late.dta", table, missing, "Late")
    stata = pd.read_stata(tmp_path / "late.dta", convert_missing=True, convert_dates=False)
    assert stata.loc[130, "size_mm"] == 2.5 and stata.loc[20, "size_mm"].string == f".{missing.stata['NR']}"
    assert stata.loc[0, "size_mm"].string == "."
    dates = pd.read_stata(tmp_path / "late.dta")["seen"]
    assert dates[140] == pd.Timestamp("2024-02-29") and dates.isna().sum() == n - 1
    assert stata.loc[149, "late_age"] == 12 and stata.loc[0, "late_age"].string == f".{missing.stata['UNK']}"

    write_spss(values_path, codes_path, tmp_path / "late.sav", table, missing, "Late")
    spss, _ = pyreadstat.read_sav(tmp_path / "late.sav", user_missing=True)
    assert spss.loc[130, "size_mm"] == 2.5 and spss.loc[20, "size_mm"] == missing.spss["NR"]
    assert pd.isna(spss.loc[0, "size_mm"])
    assert spss.loc[140, "seen"] == date(2024, 2, 29) and pd.isna(spss.loc[0, "seen"])
    assert spss.loc[149, "late_age"] == 12 and spss.loc[0, "late_age"] == missing.spss["UNK"]


#: The wide table of the streaming tests: its text, codes, labels, dates and date-times.
LONG_NOTE = "\u00e9" * 1500  # 3,000 bytes: a Stata strL, an SPSS very long string


def wide_table(tmp_path: Path) -> tuple[Path, Path, Table, MissingCodes]:
    """Five rows of every kind of column the writers meet, in Parquet as an export leaves them."""
    table = Table("wide", "Wide \u00e9t\u00e9", (
        Column("note", "Note", Kind.STRING, Role.VALUE),
        Column("town", "Town", Kind.STRING, Role.VALUE),
        Column("sex", "Sex", Kind.INTEGER, Role.VALUE, codes=("NR",), value_labels=(("1", "Male"), ("2", "Female"))),
        Column("size_mm", "Size", Kind.NUMBER, Role.VALUE, codes=("NR", "UNK")),
        Column("seen", "Seen", Kind.DATE, Role.VALUE),
        Column("at", "At", Kind.DATETIME, Role.VALUE),
    ), ())
    notes = [LONG_NOTE, None, "short", "", LONG_NOTE + "!"]
    towns = ["Z\u00fcrich", None, "Ume\u00e5", "Lyon", "Kyiv"]
    sexes, sex_codes = [1, None, 2, None, 1], [None, "NR", None, None, None]
    sizes, size_codes = [2.5, None, None, 0.0, 12.25], [None, None, "UNK", None, "NR"]
    seen = [date(2024, 2, 29), None, date(1959, 12, 31), date(1960, 1, 1), None]
    at = [datetime(2021, 3, 5, 14, 30), None, None, datetime(1960, 1, 1, 0, 1), None]
    values_path, codes_path = tmp_path / "wide.parquet", tmp_path / "wide.codes.parquet"
    pq.write_table(pa.Table.from_arrays(
        [pa.array(notes), pa.array(towns), pa.array(sexes, pa.int64()), pa.array(sizes), pa.array(seen, pa.date32()),
         pa.array(at, pa.timestamp("s"))], schema=arrow_schema(table)), values_path)
    pq.write_table(pa.table({"sex": pa.array(sex_codes, pa.string()), "size_mm": pa.array(size_codes, pa.string())}),
                   codes_path)
    missing = MissingCodes([MissingCode("UNK", "Unknown"), MissingCode("NR", "Not reported")])
    return values_path, codes_path, table, missing


def test_stata_files_are_written_a_batch_at_a_time_with_long_text(tmp_path, monkeypatch):
    """The .dta writer streams rows in batches (two rows here, so every batch boundary is
    crossed): text past 2,045 bytes becomes a strL, accented text keeps its characters, and
    labels, tags, dates and date-times read back the same in pandas and in pyreadstat."""
    monkeypatch.setattr(streaming, "ROWS", 2)
    values_path, codes_path, table, missing = wide_table(tmp_path)
    out = tmp_path / "wide.dta"
    write_stata(values_path, codes_path, out, table, missing, "Wide \u00e9t\u00e9")

    frame = pd.read_stata(out, convert_categoricals=False)
    assert frame["note"].tolist() == [LONG_NOTE, "", "short", "", LONG_NOTE + "!"]
    assert frame["town"].tolist() == ["Z\u00fcrich", "", "Ume\u00e5", "Lyon", "Kyiv"]
    assert frame["seen"].tolist()[:4] == [pd.Timestamp("2024-02-29"), pd.NaT, pd.Timestamp("1959-12-31"),
                                          pd.Timestamp("1960-01-01")]
    assert frame.loc[0, "at"] == pd.Timestamp("2021-03-05 14:30")
    assert frame.loc[3, "at"] == pd.Timestamp("1960-01-01 00:01") and pd.isna(frame.loc[1, "at"])
    tagged = pd.read_stata(out, convert_missing=True, convert_dates=False, convert_categoricals=False)
    assert [str(v) for v in tagged["size_mm"]] == ["2.5", ".", ".a", "0.0", ".b"]
    assert [str(v) for v in tagged["sex"]] == ["1.0", ".b", "2.0", ".", "1.0"]
    with pd.io.stata.StataReader(out) as reader:
        reader.read()
        assert reader.data_label == "Wide \u00e9t\u00e9"
        assert reader.variable_labels() == {"note": "Note", "town": "Town", "sex": "Sex", "size_mm": "Size",
                                            "seen": "Seen", "at": "At"}
        # .b (Not reported) is stored as the int32 2147483623, which pandas shows as such.
        assert reader.value_labels() == {"sex": {1: "Male", 2: "Female", 2147483623: "Not reported"}}
    data, meta = pyreadstat.read_dta(str(out), user_missing=True)
    assert data["note"].tolist()[4] == LONG_NOTE + "!" and data["size_mm"].tolist()[2:] == ["a", 0.0, "b"]
    assert meta.variable_value_labels["sex"] == {1: "Male", 2: "Female", "b": "Not reported"}
    assert meta.number_rows == 5 and meta.file_label == "Wide \u00e9t\u00e9"


def test_spss_files_are_written_a_batch_at_a_time_with_very_long_strings(tmp_path, monkeypatch):
    """The .sav writer streams cases in batches of two: text past 255 bytes is split into
    255-byte segments that readers join again, codes are their sentinels declared user-missing,
    and labels, dates and date-times read back as written."""
    monkeypatch.setattr(streaming, "ROWS", 2)
    values_path, codes_path, table, missing = wide_table(tmp_path)
    out = tmp_path / "wide.sav"
    write_spss(values_path, codes_path, out, table, missing, "Wide \u00e9t\u00e9")

    data, meta = pyreadstat.read_sav(str(out), user_missing=True)
    assert list(data.columns) == ["note", "town", "sex", "size_mm", "seen", "at"]
    assert data["note"].tolist() == [LONG_NOTE, "", "short", "", LONG_NOTE + "!"]
    assert data["town"].tolist() == ["Z\u00fcrich", "", "Ume\u00e5", "Lyon", "Kyiv"]
    assert data.loc[0, "size_mm"] == 2.5 and pd.isna(data.loc[1, "size_mm"]) and data.loc[3, "size_mm"] == 0.0
    assert data.loc[2, "size_mm"] == missing.spss["UNK"]
    assert data.loc[4, "size_mm"] == missing.spss["NR"] and data.loc[1, "sex"] == missing.spss["NR"]
    seen = data["seen"].tolist()
    assert seen[0] == date(2024, 2, 29) and pd.isna(seen[1]) and seen[2:4] == [date(1959, 12, 31), date(1960, 1, 1)]
    assert data.loc[0, "at"] == datetime(2021, 3, 5, 14, 30) and data.loc[3, "at"] == datetime(1960, 1, 1, 0, 1)
    assert meta.number_rows == 5 and meta.file_label == "Wide \u00e9t\u00e9" and meta.file_encoding == "UTF-8"
    assert meta.column_names_to_labels == {"note": "Note", "town": "Town", "sex": "Sex", "size_mm": "Size",
                                           "seen": "Seen", "at": "At"}
    assert meta.variable_value_labels["sex"] == {1.0: "Male", 2.0: "Female", missing.spss["NR"]: "Not reported"}
    assert meta.missing_ranges["size_mm"] == [{"lo": missing.spss["NR"], "hi": missing.spss["UNK"]}]
    assert meta.original_variable_types == {"note": "A3001", "town": "A7", "sex": "F8.0", "size_mm": "F8.2",
                                            "seen": "DATE11", "at": "DATETIME20"}
    assert meta.variable_measure == {"note": "nominal", "town": "nominal", "sex": "nominal", "size_mm": "scale",
                                     "seen": "nominal", "at": "nominal"}
    plain, _ = pyreadstat.read_sav(str(out))
    assert pd.isna(plain.loc[2, "size_mm"]) and pd.isna(plain.loc[1, "sex"])  # user-missing is missing


@pytest.mark.parametrize(("name", "program"), [("in", "Stata"), ("to", "SPSS")])
def test_a_column_no_statistics_program_accepts_stops_the_profile(app, tmp_path, name, program):
    """A field named as a Stata or SPSS keyword would make files those programs refuse: the
    profile's plan names the column and the program, and the app does not start with it."""
    forms = tmp_path / "forms"
    shutil.copytree(ROOT / "forms", forms)
    path = forms / "instruments" / "lesion_presentation.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("name: ulcer_size_mm", f"name: {name}"),
                    encoding="utf-8")
    study = load_study(forms)
    profile = load_profiles(ROOT / "exports", study)["pooled_case_series"]
    with pytest.raises(PlanError, match=f"column '{name}' of table 'cases' is a reserved word in {program}"):
        Plan(study, profile)


def test_the_disclosure_check_remembers_combinations_without_changing_them(app, monkeypatch):
    """The check remembers each combination by what it read; the answers equal those computed
    afresh for every record (memory off), exempt records included, codes and bands alike."""
    study = current_study()
    rule = get_profile("pooled_case_series").disclosure
    cases = [({"sex": sex, "ga_weeks": weeks, "case_source": source}, missing)
             for sex in ("1", "2", None) for weeks in (24, 31, 36.5, 40, None) for source in ("1", "3")
             for missing in ({}, {"ga_weeks": "NR"}, {"sex": "UNK"})]
    records = [("KMU" if n % 2 else "NTH", {("enrolment", 1): FormRow("enrolment", 1, data, missing, 2)})
               for n, (data, missing) in enumerate(cases)]
    remembering = disclosure.DisclosureCheck(rule, study)
    first = [remembering.key(site, forms) for site, forms in records]
    assert [remembering.key(site, forms) for site, forms in records] == first
    monkeypatch.setattr(disclosure, "KEY_MEMORY", 0)
    fresh = disclosure.DisclosureCheck(rule, study)
    assert [fresh.key(site, forms) for site, forms in records] == first
    assert first[0] == ("NTH", "1", "<28")  # site, sex, gestational age band
    assert first[cases.index(({"sex": "1", "ga_weeks": 24, "case_source": "3"}, {}))] is None  # published
    assert first[cases.index(({"sex": "1", "ga_weeks": 24, "case_source": "1"}, {"ga_weeks": "NR"}))][2] == "NR"


def test_choice_columns_export_codes_as_numbers_even_one_the_definition_no_longer_lists(app):
    """Choice codes are looked up, not parsed per cell; data saved under an earlier definition
    may hold a code since removed, which must still be exported as its number, not dropped."""
    study = current_study()
    plan = Plan(study, get_profile("pooled_case_series"), None)
    table = plan.main_table()
    column = next(c for c in table.columns if c.role == Role.VALUE and c.kind == Kind.INTEGER and c.value_labels)
    listed = column.value_labels[-1][0]
    stored = [{column.field: listed}, {column.field: "97"}, {}]
    views = []
    for n, data in enumerate(stored):
        form = FormRow(column.instrument, 1, data, {}, 2)
        views.append(RecordView(key=f"P{n}", site="S1", forms={(column.instrument, 1): form},
                                instances={column.instrument: [form]}))
    cells = plan.block(table, views).values[table.columns.index(column)]
    assert cells == [int(listed), 97, None]


def test_the_census_reads_each_live_record_of_its_sites_once_with_its_first_forms(demo):
    """The disclosure census counts every live record of the scope exactly once, including a
    record with no quasi-identifier form yet (blanks), and never a deleted record or another
    site's."""
    enrolled = add_record("NTH", {"enrolment": {"case_source": "1", "sex": "2", "ga_weeks": "39"}})
    add_record("NTH", {})
    gone = add_record("NTH", {"enrolment": {"case_source": "1", "sex": "1", "ga_weeks": "30"}})
    add_record("RVH", {"enrolment": {"case_source": "1", "sex": "1", "ga_weeks": "30"}})
    gone.deleted_at = utcnow()
    db.session.flush()
    nth = db.session.scalar(select(Site.id).where(Site.code == "NTH"))
    live = db.session.scalar(select(func.count(Record.id)).where(Record.site_id == nth, Record.deleted_at.is_(None)))
    read = list(iter_first_forms(db.session, {nth}, {"enrolment"}))
    assert len(read) == live and {site for site, _ in read} == {"NTH"}
    (_, first), (_, empty) = read[-2:]  # record-id order: the two live records just added
    assert list(first) == [("enrolment", 1)] and first["enrolment", 1].data["sex"] == "2"
    assert first["enrolment", 1].data["ga_weeks"] == 39 and enrolled.site_id == nth
    assert empty == {}


def test_batches_hand_every_live_record_once_in_order_with_the_collector_off(demo):
    """An export reads its records batch by batch: every live record of the scope once, in
    record-id order, with its forms (repeat instances in order), and the cyclic collector off
    while a batch is handled and back on after, also when the handler fails."""
    for _ in range(2):
        add_record("NTH", {})
    add_record("NTH", {"enrolment": {"case_source": "1", "sex": "2"},
                       "imaging_followup": [{"imaging_date": "2024-01-02"}, {"imaging_date": "2024-02-03"}]})
    gone = add_record("NTH", {"enrolment": {"case_source": "1", "sex": "1"}})
    gone.deleted_at = utcnow()
    db.session.flush()
    nth = db.session.scalar(select(Site.id).where(Site.code == "NTH"))
    live = db.session.scalars(select(Record.id).where(Record.site_id == nth, Record.deleted_at.is_(None))
                              .order_by(Record.id)).all()
    assert len(live) >= 3  # so that batches of two split the site
    seen: list[list[int]] = []
    collector: list[bool] = []

    def handle(batch: list[SourceRecord]) -> None:
        seen.append([rec.id for rec in batch])
        collector.append(gc.isenabled())

    each_batch(db.session, {nth}, {"enrolment", "imaging_followup"}, handle, batch_size=2)
    assert [len(ids) for ids in seen] == [2] * (len(live) // 2) + [1] * (len(live) % 2)
    assert [rid for ids in seen for rid in ids] == list(live)
    assert collector == [False] * len(seen) and gc.isenabled()
    last = first_records(db.session, {nth}, {"enrolment", "imaging_followup"}, len(live))[-1]
    assert last.id == live[-1] and last.site_code == "NTH"
    assert [f.data["imaging_date"] for f in last.instances["imaging_followup"]] == ["2024-01-02", "2024-02-03"]
    assert last.forms["enrolment", 1].data["sex"] == "2"

    def fail(batch: list[SourceRecord]) -> None:
        raise ValueError("disk full")

    with pytest.raises(ValueError):
        each_batch(db.session, {nth}, {"enrolment"}, fail)
    assert gc.isenabled()
