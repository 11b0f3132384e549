"""The syntax tree shared by branching logic, calculations, data-quality rules and filters.

Trees are immutable (frozen dataclasses) so that ``parse()`` can cache them and hand the
same object to every caller, and so that they can be hashed and compared structurally.

The tree is also the contract with the browser: ``to_json()`` serialises it to the shape
below, and ``app/static/js/logic.js`` evaluates exactly that shape. Change both together.

JSON shape (one object per node, discriminated by ``"t"``)::

    {"t": "field",    "name": "weight"}                   [weight]
    {"t": "checkbox", "name": "symptoms", "code": "2"}    [symptoms(2)]
    {"t": "str",      "v": "1"}                           '1' or "1"
    {"t": "num",      "v": 2.5}                           2.5 (always a JSON number)
    {"t": "bool",     "v": true}                          true / false
    {"t": "op",       "op": "+", "args": [a, b]}          operators, see OPERATORS
    {"t": "fn",       "name": "round", "args": [...]}     functions, see FUNCTIONS

Operators are binary except ``not`` and ``neg`` (unary minus), which take one argument.
``!=`` is normalised to ``<>``; keyword and function names are normalised to lower case.
``datediff`` always has 3 arguments (d1, d2, unit) or 4 (d1, d2, unit, signed): the
parser drops REDCap's date-format argument because stored dates are always ISO.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Every operator that can appear in an ``Op`` node.
OPERATORS = frozenset({"and", "or", "not", "=", "<>", "<", "<=", ">", ">=", "+", "-", "*", "/", "^", "neg"})

#: Every function, with its (minimum, maximum) number of arguments; None = no maximum.
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "datediff": (3, 5),
    "if": (3, 3),
    "round": (1, 2),
    "roundup": (1, 2),
    "rounddown": (1, 2),
    "abs": (1, 1),
    "min": (1, None),
    "max": (1, None),
    "sum": (1, None),
    "mean": (1, None),
    "sqrt": (1, 1),
    "isblankormissingcode": (1, 1),
    "isnumber": (1, 1),
    "contains": (2, 2),
}

#: datediff() units: years, months, days, hours, minutes, seconds (case matters: M vs m).
DATEDIFF_UNITS = ("y", "M", "d", "h", "m", "s")


@dataclass(frozen=True, slots=True)
class Field:
    """``[name]``: the value of a field."""

    name: str


@dataclass(frozen=True, slots=True)
class Checkbox:
    """``[name(code)]``: '1' if option *code* of checkbox field *name* is ticked, else '0'."""

    name: str
    code: str


@dataclass(frozen=True, slots=True)
class Str:
    """A quoted string literal (quotes removed)."""

    value: str


@dataclass(frozen=True, slots=True)
class Num:
    """A numeric literal; always a float so Python and JavaScript see the same value."""

    value: float


@dataclass(frozen=True, slots=True)
class Bool:
    """``true`` or ``false``."""

    value: bool


@dataclass(frozen=True, slots=True)
class Op:
    """An operator applied to one (``not``, ``neg``) or two operands."""

    op: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Call:
    """A function call; *name* is lower case and the arity has been checked by the parser."""

    name: str
    args: tuple[Expr, ...]


Expr = Field | Checkbox | Str | Num | Bool | Op | Call


def to_json(expr: Expr) -> dict[str, Any]:
    """Serialise *expr* to the JSON shape documented in this module (consumed by logic.js)."""
    match expr:
        case Field(name):
            return {"t": "field", "name": name}
        case Checkbox(name, code):
            return {"t": "checkbox", "name": name, "code": code}
        case Str(value):
            return {"t": "str", "v": value}
        case Num(value):
            return {"t": "num", "v": value}
        case Bool(value):
            return {"t": "bool", "v": value}
        case Op(op, args):
            return {"t": "op", "op": op, "args": [to_json(arg) for arg in args]}
        case Call(name, args):
            return {"t": "fn", "name": name, "args": [to_json(arg) for arg in args]}
    raise TypeError(f"not a logic expression: {expr!r}")


def _walk(expr: Expr) -> Iterator[Expr]:
    """Yield *expr* and every node below it."""
    yield expr
    if isinstance(expr, Op | Call):
        for arg in expr.args:
            yield from _walk(arg)


def referenced_fields(expr: Expr) -> frozenset[str]:
    """Names of all fields *expr* reads; a checkbox option counts as its base field.

    Used to know which fields a rule depends on (re-evaluate on change, validate the
    study definition, fetch only the needed columns).
    """
    return frozenset(node.name for node in _walk(expr) if isinstance(node, Field | Checkbox))


def checkbox_refs(expr: Expr) -> frozenset[tuple[str, str]]:
    """``(field, code)`` pairs used with the ``[field(code)]`` syntax.

    Lets the study loader check that each field is a checkbox and each code one of its
    options, which REDCap itself only discovers when a form misbehaves.
    """
    return frozenset((node.name, node.code) for node in _walk(expr) if isinstance(node, Checkbox))
