"""Reading REDCap API parameters the way every real client sends them.

The same parameter arrives in different shapes from different clients: PyCap numbers
list items from 0 (``fields[0]=a``), redcapAPI from 1 (``fields[1]=a``), REDCapR
collapses them (``fields=a,b``); booleans come as ``True``/``true``/``1``. One parser
accepts them all so no handler has to care which client is calling. Parameters a handler
does not ask for are ignored, as REDCap ignores them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from werkzeug.datastructures import MultiDict

Format = Literal["json", "csv", "xml"]
FORMATS: tuple[Format, ...] = ("json", "csv", "xml")

_INDEXED = re.compile(r"^(?P<name>[A-Za-z_]+)\[(?P<index>\d*)\]$")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


class ApiError(Exception):
    """A refused API call: answered with `status` and `{"error": message}` (or its CSV/XML form).

    `message` is shown to the client, so it names parameters, fields and the values the
    client itself sent, never stored data.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Params:
    """The form-encoded parameters of one API call, with typed accessors."""

    def __init__(self, form: MultiDict[str, str] | Mapping[str, str]) -> None:
        self._form: MultiDict[str, str] = form if isinstance(form, MultiDict) else MultiDict(form)
        for name, value in self._form.items(multi=True):
            if "\x00" in name or "\x00" in value:
                # PostgreSQL cannot hold it in text or JSON: refused here, named, not as a database error.
                shown = name.replace("\x00", "\\0")
                raise ApiError(f'The parameter "{shown}" contains a NUL character (\\0), which no value may hold.')

    def text(self, name: str, default: str = "") -> str:
        """A single text parameter, stripped of surrounding white space."""
        value = self._form.get(name)
        return default if value is None else value.strip()

    def raw(self, name: str) -> str | None:
        """A parameter exactly as sent (the `data` payload keeps its white space)."""
        return self._form.get(name)

    def has(self, name: str) -> bool:
        return name in self._form

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        """One of `allowed` (case-insensitive); a blank parameter means `default`."""
        value = self.text(name).lower()
        if not value:
            return default
        if value not in allowed:
            shown = ", ".join(allowed)
            raise ApiError(f'The value of the parameter "{name}" is not valid: use one of {shown}.')
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean sent as True/true/1 or False/false/0 (absent means `default`)."""
        if name not in self._form:
            return default
        value = self.text(name).lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ApiError(f'The value of the parameter "{name}" must be true or false (or 1 or 0).')

    def items(self, name: str) -> list[str]:
        """A list parameter in any of the three styles, in the client's order, without duplicates.

        `name[0]=a&name[1]=b` (ordered by the index, so 0- and 1-based both work),
        `name[]=a`, and `name=a,b` (REDCapR's collapsed form; repeated keys also count).
        """
        indexed: list[tuple[int, int, str]] = []
        plain: list[str] = []
        for position, (key, value) in enumerate(self._form.items(multi=True)):
            if key == name:
                plain.extend(value.split(","))
                continue
            match = _INDEXED.match(key)
            if match and match["name"] == name:
                index = int(match["index"]) if match["index"] else position
                indexed.append((index, position, value))
        ordered = [value for _, _, value in sorted(indexed)] + plain
        seen: dict[str, None] = {}
        for item in ordered:
            item = item.strip()
            if item:
                seen.setdefault(item, None)
        return list(seen)

    def data_format(self) -> Format:
        """The `format` of the data sent or asked for (REDCap's default is xml)."""
        return self.choice("format", FORMATS, "xml")  # type: ignore[return-value]

    def return_format(self) -> Format:
        """The format of messages and import results: `returnFormat`, else `format`, else xml."""
        fallback = self.text("format").lower()
        return self.choice("returnFormat", FORMATS, fallback if fallback in FORMATS else "xml")  # type: ignore[return-value]
