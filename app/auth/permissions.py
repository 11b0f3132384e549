"""Who may do what, in one place.

Site roles apply only to the sites a user belongs to; admins act on every site;
statisticians see no record at all (only de-identified exports).
"""

from __future__ import annotations

import enum

from app.auth.models import SiteRole, User


class Action(enum.StrEnum):
    VIEW = "view"  # read a record and its forms
    CREATE = "create"  # create a record
    EDIT = "edit"  # change study data
    REVIEW = "review"  # investigator review and sign-off
    QUERY = "query"  # raise data queries


#: Which site roles allow each action on a record of that site.
SITE_ROLE_ACTIONS: dict[SiteRole, frozenset[Action]] = {
    SiteRole.COORDINATOR: frozenset({Action.VIEW, Action.CREATE, Action.EDIT}),
    SiteRole.INVESTIGATOR: frozenset({Action.VIEW, Action.REVIEW, Action.QUERY}),
    SiteRole.MONITOR: frozenset({Action.VIEW, Action.QUERY}),
}

ADMIN_ACTIONS = frozenset({Action.VIEW, Action.CREATE, Action.EDIT, Action.REVIEW, Action.QUERY})


def site_ids_for(user: User, action: Action = Action.VIEW) -> set[int] | None:
    """Site ids where `user` may do `action`; None means every site (admins)."""
    if user.is_admin:
        return None if action in ADMIN_ACTIONS else set()
    return {m.site_id for m in user.memberships if action in SITE_ROLE_ACTIONS[m.role]}


def can(user: User, action: Action, site_id: int) -> bool:
    allowed = site_ids_for(user, action)
    return allowed is None or site_id in allowed


def roles_at(user: User, site_id: int) -> list[str]:
    """Role names shown in the page header for the site being viewed."""
    roles = [m.role.value for m in user.memberships if m.site_id == site_id]
    if user.study_role:
        roles.append(user.study_role.value)
    return roles
