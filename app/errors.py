"""Domain errors raised by services and turned into pages or API errors at the edge.

Services know nothing of HTTP; views and the API map these to 404/403/409/422.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class CasebookError(Exception):
    """Base class: `message` is safe to show to the user (never holds PHI values)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(CasebookError):
    """Missing, or outside the user's sites: both look the same so existence never leaks."""


class PermissionDenied(CasebookError):
    """The user may see the thing but not do this to it."""


class ValidationFailed(CasebookError):
    """Submitted data was refused; `errors` maps field name to the message for that field."""

    def __init__(
        self, errors: Mapping[str, str], message: str = "Nothing was saved: please correct the fields marked below."
    ) -> None:
        super().__init__(message)
        self.errors = dict(errors)


class ConflictError(CasebookError):
    """Someone else saved the same form first; `current` describes what they saved."""

    def __init__(self, message: str, current: Any = None) -> None:
        super().__init__(message)
        self.current = current
