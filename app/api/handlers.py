"""One handler per REDCap `content` value, and the table that dispatches to them.

The table is also what the OpenAPI description and the API page list, so the
documentation names exactly the contents the endpoint answers. Handlers are thin:
they read parameters, call a service, and pick the answer's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.columns import checkbox_column
from app.api.deletion import delete_records
from app.api.export import RecordExport, parse_timestamp
from app.api.imports import ImportOptions, RecordImport, parse_payload
from app.api.params import ApiError, Format, Params
from app.api.render import object_response, result_response, rows_response
from app.audit.models import AuditEvent
from app.audit.services import VALUE_ACTIONS, AuditEntry, append, decode_cell
from app.auth.models import Site, User
from app.auth.permissions import Action, site_ids_for
from app.dictionary.rows import KEYS, dictionary_rows
from app.records.repository import RecordRepository
from app.study.definition import Study

#: The REDCap API version whose behaviour this endpoint follows (PyCap reads it as a semantic version).
REDCAP_VERSION = "14.5.2"
LOG_BATCH = 2000


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated API call."""

    session: Session
    study: Study
    user: User
    params: Params

    @property
    def fmt(self) -> Format:
        return self.params.data_format()

    @property
    def return_fmt(self) -> Format:
        return self.params.return_format()

    def require_admin(self, what: str) -> None:
        if not self.user.is_admin:
            raise ApiError(f"You do not have permissions to export {what}: only an admin may.", 403)


@dataclass(frozen=True, slots=True)
class Content:
    """A `content` value: what it does (for the documentation) and who may use it."""

    name: str
    summary: str
    run: Callable[[Call], Response]
    admin_only: bool = False


def _version(call: Call) -> Response:
    return Response(REDCAP_VERSION, mimetype="text/plain")


def project_info(study: Study) -> dict[str, Any]:
    """REDCap's project information, with the values that describe a Casebook study."""
    return {
        "project_id": 1,
        "project_title": study.name,
        "creation_time": "",
        "production_time": "",
        "in_production": 1,
        "project_language": "English",
        "purpose": 2,
        "purpose_other": "",
        "project_notes": study.description,
        "custom_record_label": "",
        "secondary_unique_field": "",
        "is_longitudinal": 0,
        "has_repeating_instruments_or_events": int(any(i.repeatable for i in study.instruments)),
        "surveys_enabled": 0,
        "scheduling_enabled": 0,
        "record_autonumbering_enabled": 1,
        "randomization_enabled": 0,
        "ddp_enabled": 0,
        "project_irb_number": study.protocol,
        "project_grant_number": "",
        "project_pi_firstname": "",
        "project_pi_lastname": "",
        "display_today_now_button": 1,
        "missing_data_codes": " | ".join(f"{m.code}, {m.label}" for m in study.missing_codes),
        "external_modules": "",
        "bypass_branching_erase_field_prompt": 0,
    }


def _project(call: Call) -> Response:
    return object_response(project_info(call.study), call.fmt)


def _metadata(call: Call) -> Response:
    fields, forms = call.params.items("fields"), call.params.items("forms")
    rows = dictionary_rows(call.study)
    known_fields = {row["field_name"] for row in rows}
    for name, wanted, known in (("fields", fields, known_fields),
                                ("forms", forms, {i.name for i in call.study.instruments})):
        bad = [w for w in wanted if w not in known]
        if bad:
            shown = ", ".join(f"'{b}'" for b in bad)
            raise ApiError(f'The following values in the parameter "{name}" are not valid: {shown}')
    if fields or forms:
        rows = [row for row in rows if row["field_name"] in fields or row["form_name"] in forms]
    return rows_response(KEYS, [rows], call.fmt)


def _instruments(call: Call) -> Response:
    rows = [{"instrument_name": i.name, "instrument_label": i.label} for i in call.study.instruments]
    return rows_response(["instrument_name", "instrument_label"], [rows], call.fmt)


def _field_names(call: Call) -> Response:
    """Import/export names; calc and descriptive fields are left out, as REDCap does."""
    study = call.study
    wanted = call.params.text("field")
    if wanted and not (study.has_field(wanted) or wanted == study.record_id_field):
        raise ApiError(f"The field '{wanted}' does not exist in this project.")
    rows = [{"original_field_name": study.record_id_field, "choice_value": "",
             "export_field_name": study.record_id_field}]
    for instrument in study.instruments:
        for f in instrument.fields:
            if f.type in ("calc", "descriptive"):
                continue
            if f.type == "checkbox":
                codes = [*f.choice_codes, *(m.code for m in study.missing_codes if f.allow_missing_codes)]
                rows += [{"original_field_name": f.name, "choice_value": code,
                          "export_field_name": checkbox_column(f.name, code)} for code in codes]
            else:
                rows.append({"original_field_name": f.name, "choice_value": "", "export_field_name": f.name})
        status = f"{instrument.name}_complete"
        rows.append({"original_field_name": status, "choice_value": "", "export_field_name": status})
    if wanted:
        rows = [row for row in rows if row["original_field_name"] == wanted]
    return rows_response(["original_field_name", "choice_value", "export_field_name"], [rows], call.fmt)


def _repeating(call: Call) -> Response:
    rows = [{"form_name": i.name, "custom_form_label": ""} for i in call.study.instruments if i.repeatable]
    return rows_response(["form_name", "custom_form_label"], [rows], call.fmt)


def visible_sites(session: Session, user: User) -> list[Site]:
    """Sites a user sees as data access groups: theirs, or all for study-wide roles."""
    if user.is_admin or user.is_statistician:
        return list(session.scalars(select(Site).order_by(Site.code)))
    return RecordRepository(session, user).sites()


def _dags(call: Call) -> Response:
    rows = [{"data_access_group_name": s.name, "unique_group_name": s.code.lower(),
             "data_access_group_id": str(s.id)} for s in visible_sites(call.session, call.user)]
    return rows_response(["data_access_group_name", "unique_group_name", "data_access_group_id"], [rows], call.fmt)


USER_COLUMNS = ["username", "email", "firstname", "lastname", "expiration", "data_access_group",
                "data_access_group_id", "design", "user_rights", "data_access_groups", "data_export", "api_export",
                "api_import", "record_create", "record_delete", "forms", "forms_export"]


def _user_row(study: Study, user: User) -> dict[str, str]:
    first, _, last = user.full_name.partition(" ")
    admin = "1" if user.is_admin else "0"
    viewing = site_ids_for(user, Action.VIEW)
    editing = site_ids_for(user, Action.EDIT)
    only_site = user.memberships[0].site if len(user.memberships) == 1 else None
    form_right = "1" if editing != set() else ("2" if viewing != set() else "0")
    export_right = "2" if user.is_statistician and not user.is_admin else ("1" if viewing != set() else "0")
    return {
        "username": user.username, "email": user.email or "", "firstname": first, "lastname": last,
        "expiration": "" if user.active else "disabled",
        "data_access_group": only_site.code.lower() if only_site else "",
        "data_access_group_id": str(only_site.id) if only_site else "",
        "design": admin, "user_rights": admin, "data_access_groups": admin,
        "data_export": export_right, "api_export": "1",
        "api_import": "0" if editing == set() else "1",
        "record_create": "0" if site_ids_for(user, Action.CREATE) == set() else "1",
        "record_delete": admin,
        "forms": ",".join(f"{i.name}:{form_right}" for i in study.instruments),
        "forms_export": ",".join(f"{i.name}:{export_right}" for i in study.instruments),
    }


def _users(call: Call) -> Response:
    call.require_admin("users")
    rows = [_user_row(call.study, u) for u in call.session.scalars(select(User).order_by(User.username))]
    return rows_response(USER_COLUMNS, [rows], call.fmt)


#: REDCap's `logtype` values that Casebook's audit trail can answer, as audit actions.
LOG_TYPES: dict[str, tuple[str, ...]] = {
    "record": ("create_record", "update", "calculate", "clear_hidden", "status", "delete_record", "restore_record"),
    "record_add": ("create_record",),
    "record_edit": ("update", "calculate", "clear_hidden", "status"),
    "record_delete": ("delete_record",),
    "export": ("export_records",),
    "user": ("login", "login_failed", "login_locked", "logout", "password_changed", "user_created",
             "role_granted", "api_token_created", "api_token_revoked", "totp_enabled", "totp_disabled", "totp_reset"),
}


def _log_row(event: AuditEvent) -> dict[str, str]:
    details = event.reason or ""
    if event.action == "status":
        details = f"{event.instrument}_complete = '{event.new_value}'"
    elif event.field:
        shown = event.new_value or ""
        if event.action in VALUE_ACTIONS:  # a stored value: audit-encoded (JSON, or a missing code)
            value, code = decode_cell(event.new_value)
            shown = code or ("" if value is None else (",".join(value) if isinstance(value, list) else str(value)))
        details = f"{event.field} = '{shown}'" + (f" ({event.reason})" if event.reason else "")
    return {
        "timestamp": f"{event.occurred_at:%Y-%m-%d %H:%M}",
        "username": event.username or "",
        "action": event.action + (f" {event.record_label}" if event.record_label else ""),
        "details": details,
        "record": event.record_label or "",
    }


def _log(call: Call) -> Response:
    """The audit trail as REDCap's logging export, streamed in batches (admin only, times in UTC)."""
    call.require_admin("the log")
    params = call.params
    stmt = select(AuditEvent)
    kind = params.text("logtype")
    if kind:
        if kind not in LOG_TYPES:
            raise ApiError(f'The value of the parameter "logtype" is not valid: use one of {", ".join(LOG_TYPES)}.')
        stmt = stmt.where(AuditEvent.action.in_(LOG_TYPES[kind]))
    for name, column in (("user", AuditEvent.username), ("record", AuditEvent.record_label)):
        if params.text(name):
            stmt = stmt.where(column == params.text(name))
    begin, end = parse_timestamp(params, "beginTime"), parse_timestamp(params, "endTime")
    if begin:
        stmt = stmt.where(AuditEvent.occurred_at >= begin)
    if end:
        stmt = stmt.where(AuditEvent.occurred_at <= end)
    session = call.session

    def batches() -> Iterator[list[dict[str, str]]]:
        last = 0
        while True:
            events = list(session.scalars(stmt.where(AuditEvent.id > last).order_by(AuditEvent.id).limit(LOG_BATCH)))
            if not events:
                return
            yield [_log_row(e) for e in events]
            last = events[-1].id
            session.expunge_all()

    return rows_response(["timestamp", "username", "action", "details", "record"], batches(), call.fmt, stream=True)


def _record(call: Call) -> Response:
    """Export, import (`data` sent) or delete (`action=delete`) records."""
    params = call.params
    if params.text("type", "flat").lower() != "flat":
        raise ApiError('Only type=flat is supported (one row per record or repeating instance).')
    action = params.text("action").lower()
    if action == "delete":
        if params.text("instrument") or params.text("event") or params.text("repeat_instance"):
            raise ApiError("Casebook deletes whole records only; deleting one instrument or instance is not "
                           "supported.")
        count = delete_records(call.session, call.user, params.items("records"), params.text("reason"))
        return result_response(call.return_fmt, json_value=count, csv_rows=[[str(count)]],
                               xml=f"<count>{count}</count>\n")
    if params.has("data") or action == "import":
        return _import(call)
    export = RecordExport(call.session, call.study, call.user, params)
    append(call.session, [AuditEntry(
        action="export_records", user_id=call.user.id, username=call.user.username, source="api",
        reason=f"API record export ({call.fmt}, {len(export.columns)} columns"
               + (", de-identified" if export.deidentified else "") + ")",
    )])
    return rows_response(export.names, export.batches(), call.fmt, header=export.headers, stream=True)


def _import(call: Call) -> Response:
    params = call.params
    returned = params.choice("returnContent", ("count", "ids", "auto_ids", "nothing"), "count")
    options = ImportOptions(
        overwrite=params.choice("overwriteBehavior", ("normal", "overwrite"), "normal") == "overwrite",
        force_auto_number=params.flag("forceAutoNumber"),
        date_format=params.choice("dateFormat", ("ymd", "mdy", "dmy"), "ymd").upper(),
        reason=params.text("reason"),
    )
    rows = parse_payload(params.raw("data"), call.fmt)
    saved = RecordImport(call.session, call.study, call.user, options).run(rows)
    fmt = call.return_fmt
    if returned == "nothing":
        return Response("", mimetype="text/plain")
    if returned == "count":
        return result_response(fmt, json_value={"count": len(saved)}, csv_rows=[["count"], [str(len(saved))]],
                               xml=f"<count>{len(saved)}</count>\n")
    if returned == "ids":
        return result_response(fmt, json_value=[label for label, _ in saved],
                               csv_rows=[["id"], *([label] for label, _ in saved)],
                               xml="<ids>" + "".join(f"<id>{label}</id>" for label, _ in saved) + "</ids>\n")
    return result_response(fmt, json_value=[f"{label},{sent}" for label, sent in saved],
                           csv_rows=[["id", "original_id"], *([label, sent] for label, sent in saved)],
                           xml="<ids>" + "".join(f"<id>{label},{sent}</id>" for label, sent in saved) + "</ids>\n")


def _classic(what: str) -> Callable[[Call], Response]:
    def refuse(call: Call) -> Response:
        raise ApiError(f"You cannot export {what} for classic projects (this project is not longitudinal).")

    return refuse


def _files(call: Call) -> Response:
    raise ApiError("There are no file upload fields in this project.")


CONTENTS: dict[str, Content] = {c.name: c for c in (
    Content("version", "The REDCap API version this endpoint follows, as plain text.", _version),
    Content("project", "Project information, incl. missing_data_codes and has_repeating_instruments_or_events.",
            _project),
    Content("metadata", "The data dictionary as REDCap returns it (optional fields, forms).", _metadata),
    Content("instrument", "Instruments: instrument_name, instrument_label.", _instruments),
    Content("exportFieldNames", "Import/export column names (checkboxes as field___code; optional field).",
            _field_names),
    Content("repeatingFormsEvents", "The repeating instruments.", _repeating),
    Content("dag", "Sites as data access groups (unique_group_name = lower-case site code).", _dags),
    Content("user", "Users and their rights (admin only).", _users, admin_only=True),
    Content("log", "The audit trail (admin only; logtype, user, record, beginTime, endTime).", _log,
            admin_only=True),
    Content("record", "Export records; import them (data); delete them (action=delete, admin only).", _record),
    Content("formEventMapping", "An error: the project is not longitudinal.", _classic("form/event mappings")),
    Content("event", "An error: the project is not longitudinal.", _classic("events")),
    Content("arm", "An error: the project is not longitudinal.", _classic("arms")),
    Content("file", "An error: the project has no file upload fields.", _files),
)}


def dispatch(call: Call) -> Response:
    """Run the handler of the call's `content`; metadata cannot be imported through the API."""
    name = call.params.text("content")
    content = CONTENTS.get(name)
    if content is None:
        raise ApiError('The value of the parameter "content" is not valid.')
    if name != "record" and call.params.has("data"):
        raise ApiError(f"Importing {name} through the API is not supported; Casebook's definition lives in "
                       "forms/ (see flask dictionary import).")
    return content.run(call)
