"""Evaluate a logic tree against one record's values, exactly as logic.js does in the browser.

Every rule below is mirrored line for line in ``app/static/js/logic.js``; the shared case
table ``tests/logic_cases.json`` and a property test hold the two to identical results.
The browser only has strings (and arrays for checkboxes), so a value's meaning never
depends on whether it arrived as ``5``, ``5.0`` or ``'5'``.

Values. ``None``/``''``/absent = blank. A string equal to one of *missing_codes* is a
*missing code*: it equals its code in ``=``/``<>`` and is blank everywhere else (it never
equals ``''``). A string is *numeric* if it matches ``-?(digits[.digits] | .digits)``
('007' is 7; ' 5 ', '1e3', '+5' are text). Booleans count as 1/0. A checkbox value is a
list of ticked codes (or a comma-separated string): ``[cb(code)]`` is '1' or '0', and
``[cb]`` is the codes joined with ',' (blank if none).

Operators. ``=``/``<>`` compare as numbers if both sides are numeric, else as text (blank
is ''). ``< <= > >=`` are false if either side is blank or a missing code, else compare
numerically or as text (so ISO dates order correctly); text compares by UTF-16 code
unit, as JavaScript does. Arithmetic and numeric functions give blank (None) if an
operand is blank, missing or non-numeric, on division by zero and on any non-finite or
complex result. ``and``/``or``/``not`` and ``if()`` use ``is_true``. Where a number meets
text it is written as ``format_number`` writes it (JavaScript's ``String(n)``).

Functions. min/max/sum/mean skip blank and non-numeric arguments (all blank = blank).
round() rounds half away from zero, roundup() away from zero, rounddown() toward zero.
datediff(d1, d2, unit[, signed]) is d2 - d1 in *unit* ('y' = days / 365.2425, 'M' =
days / 30.44), unrounded, absolute unless *signed*; blank if a date is blank, a missing
code or not a real ISO date/datetime; 'today' means *today*. contains() ignores the case
of ASCII letters only (Unicode case rules differ between Python and browsers).

Evaluation never raises: bad data gives blank.
"""

from __future__ import annotations

import math
import operator
import re
import string
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from app.logic.nodes import Bool, Call, Checkbox, Expr, Field, Num, Op, Str


@dataclass(frozen=True, slots=True)
class _Missing:
    """A field value that is a missing code: text for equality, blank for everything else."""

    code: str


# What a sub-expression evaluates to. Blank is None, never ''.
_Value = None | bool | float | str | _Missing

_NUMERIC_RE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)")
_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[ T]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?)?")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_SECONDS_PER = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DAYS_PER = {"y": 365.2425, "M": 30.44}
# Rounding a double is at best exact to ~16 significant digits; treating a product as its
# nearest half/integer within 12 significant digits makes round(1.005, 2) = 1.01 and
# roundup(1.1, 1) = 1.1, as a person expects, without touching any value a person types.
_ROUND_TOLERANCE = 1e-12
_ROUND_TOLERANCE_CAP = 1e-6
_MAX_EXACT = 2.0**52  # from here on every double is a whole number


def format_number(number: float) -> str:
    """Text of a finite float exactly as JavaScript's ``String(number)`` writes it.

    Used wherever a number meets text (``[x] = 'abc'``, contains()) so that both sides
    agree, and by callers to display a calculated value identically on server and page:
    5.0 -> '5', 0.1 + 0.2 -> '0.30000000000000004', 1e21 -> '1e+21'.
    """
    if number == 0:
        return "0"
    if number < 0:
        return "-" + format_number(-number)
    # repr() gives the shortest round-tripping digits, as JavaScript does; only the
    # layout (when to switch to exponent notation) differs, so re-lay them out here.
    mantissa, _, exponent = repr(number).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(whole) + len(fraction) - len(digits))
    digits = digits.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        return digits + "0" * (point - count)
    if 0 < point <= 21:
        return digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return "0." + "0" * -point + digits
    power = point - 1
    head = digits[0] + ("." + digits[1:] if count > 1 else "")
    return f"{head}e{'+' if power >= 0 else '-'}{abs(power)}"


def is_true(result: Any) -> bool:
    """Whether a result counts as true: ``True`` or a non-zero number (or numeric string).

    Numeric strings count because the browser only has strings; everything else (text,
    blank, missing codes) is false, so a rule over blank fields hides rather than shows.
    """
    if isinstance(result, bool):
        return result
    if isinstance(result, int | float):
        return math.isfinite(result) and result != 0
    if isinstance(result, str) and _NUMERIC_RE.fullmatch(result):
        return float(result) != 0
    return False


def _finite(number: float) -> float | None:
    """Non-finite results become blank; ``+ 0.0`` turns -0.0 into 0.0 as JSON would."""
    return number + 0.0 if math.isfinite(number) else None


def _raw_text(raw: Any) -> str:
    """Text of a stored value, as the browser would have it in an input."""
    if raw is None:
        return ""
    if isinstance(raw, bool):
        return "1" if raw else "0"
    if isinstance(raw, int | float):
        number = _to_float(raw)
        return "" if number is None else format_number(number)
    return raw if isinstance(raw, str) else str(raw)


def _to_float(raw: int | float) -> float | None:
    try:
        return _finite(float(raw))
    except OverflowError:  # an int beyond the double range
        return None


def _scalar(raw: Any, missing_codes: frozenset[str]) -> _Value:
    """Normalise one stored value (see the module docstring)."""
    if isinstance(raw, list | tuple):
        return ",".join(map(_raw_text, raw)) or None
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float):
        number = _to_float(raw)
        if number is not None and format_number(number) in missing_codes:
            return _Missing(format_number(number))
        return number
    text = _raw_text(raw)
    if not text:
        return None
    return _Missing(text) if text in missing_codes else text


def _text(value: _Value) -> str:
    if value is None:
        return ""
    if isinstance(value, _Missing):
        return value.code
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return format_number(value)
    return value


def _number(value: _Value) -> float | None:
    """The value as a number for arithmetic and ordering, or None (blank, missing, text)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, float):
        return value
    if isinstance(value, str) and _NUMERIC_RE.fullmatch(value):
        return float(value)
    return None


def _equal(left: _Value, right: _Value) -> bool:
    # A missing code equals its code, numerically too ('-99' = -99).
    x = _number(left.code if isinstance(left, _Missing) else left)
    y = _number(right.code if isinstance(right, _Missing) else right)
    if x is not None and y is not None:
        return x == y
    return _text(left) == _text(right)


def _utf16(text: str) -> bytes:
    """Sort key matching JavaScript's string comparison (UTF-16 code units)."""
    return text.encode("utf-16-be", "surrogatepass")


def _order(op: str, left: _Value, right: _Value) -> bool:
    if left is None or right is None or isinstance(left, _Missing) or isinstance(right, _Missing):
        return False
    x, y = _number(left), _number(right)
    if x is not None and y is not None:
        return _ORDER[op](x, y)
    return _ORDER[op](_utf16(_text(left)), _utf16(_text(right)))


def _arithmetic(op: str, left: _Value, right: _Value) -> float | None:
    x, y = _number(left), _number(right)
    if x is None or y is None:
        return None
    if op == "+":
        return _finite(x + y)
    if op == "-":
        return _finite(x - y)
    if op == "*":
        return _finite(x * y)
    if op == "/":
        return None if y == 0 else _finite(x / y)
    return _power(x, y)


def _power(x: float, y: float) -> float | None:
    """``x ^ y``; whole exponents by repeated squaring, so both evaluators agree to the bit.

    C's pow() and JavaScript's Math.pow() differ in the last digit for about one result
    in ten, even for [h] ^ 2; the same sequence of multiplications cannot. Fractional
    exponents still use pow() and may differ in the 16th significant digit.
    """
    if not y.is_integer():
        try:  # math.pow raises where Math.pow gives NaN or Infinity
            return _finite(math.pow(x, y))
        except (ValueError, OverflowError):
            return None
    result, base, remaining = 1.0, x, abs(y)
    while remaining > 0:
        if remaining % 2 == 1:
            result *= base
        base *= base
        remaining = math.floor(remaining / 2)
    if y < 0:
        return None if result == 0 else _finite(1 / result)
    return _finite(result)


def _round(args: Sequence[_Value], mode: str) -> float | None:
    """round (half away from zero), roundup (away from zero), rounddown (toward zero)."""
    x = _number(args[0])
    places = _number(args[1]) if len(args) > 1 else 0.0
    if x is None or places is None:
        return None
    # Beyond +-308 places the scale is not a finite double; the result would not change.
    digits = max(-308, min(308, math.trunc(places)))
    scale = float(f"1e{abs(digits)}")
    scaled = abs(x) * scale if digits >= 0 else abs(x) / scale
    if not scaled < _MAX_EXACT:
        return _finite(x)
    tolerance = min(scaled * _ROUND_TOLERANCE, _ROUND_TOLERANCE_CAP)
    if mode == "round":
        whole = math.floor(scaled + 0.5 + tolerance)
    elif mode == "roundup":
        whole = math.ceil(scaled - tolerance)
    else:
        whole = math.floor(scaled + tolerance)
    result = whole / scale if digits >= 0 else whole * scale
    return _finite(-result if x < 0 else result)


def _aggregate(args: Sequence[_Value], kind: str) -> float | None:
    """min/max/sum/mean over the numeric arguments; blanks are skipped, all blank = blank."""
    numbers = [n for n in map(_number, args) if n is not None]
    if not numbers:
        return None
    if kind == "min":
        return _finite(min(numbers))
    if kind == "max":
        return _finite(max(numbers))
    total = 0.0
    for number in numbers:  # a plain loop: Python 3.12's sum() compensates, JavaScript doesn't
        total += number
    return _finite(total if kind == "sum" else total / len(numbers))


def _abs(args: Sequence[_Value]) -> float | None:
    x = _number(args[0])
    return None if x is None else _finite(abs(x))


def _sqrt(args: Sequence[_Value]) -> float | None:
    x = _number(args[0])
    return None if x is None or x < 0 else _finite(math.sqrt(x))


def _is_number(args: Sequence[_Value]) -> bool:
    value = args[0]
    if isinstance(value, str):
        return _NUMERIC_RE.fullmatch(value) is not None
    return isinstance(value, float)


def _contains(args: Sequence[_Value]) -> bool:
    """Case-insensitive for ASCII letters only, so Python and every browser agree."""
    return _text(args[1]).translate(_ASCII_LOWER) in _text(args[0]).translate(_ASCII_LOWER)


_FUNCTIONS: dict[str, Callable[[Sequence[_Value]], _Value]] = {
    "round": lambda args: _round(args, "round"),
    "roundup": lambda args: _round(args, "roundup"),
    "rounddown": lambda args: _round(args, "rounddown"),
    "abs": _abs,
    "min": lambda args: _aggregate(args, "min"),
    "max": lambda args: _aggregate(args, "max"),
    "sum": lambda args: _aggregate(args, "sum"),
    "mean": lambda args: _aggregate(args, "mean"),
    "sqrt": _sqrt,
    "isblankormissingcode": lambda args: args[0] is None or isinstance(args[0], _Missing),
    "isnumber": _is_number,
    "contains": _contains,
}


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 (proleptic Gregorian); the same integer algorithm as logic.js."""
    y = year - (1 if month <= 2 else 0)
    era = y // 400
    year_of_era = y - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _seconds(value: _Value, today: int) -> int | None:
    """Seconds since the epoch of an ISO date/datetime (or 'today'); None if not a date."""
    if value == "today":
        return today * 86400
    match = _DATE_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part or 0) for part in match.groups())
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    return _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second


def _datediff(args: Sequence[_Value], today: int) -> float | None:
    start, end = _seconds(args[0], today), _seconds(args[1], today)
    unit = args[2]
    if start is None or end is None or not isinstance(unit, str):
        return None
    difference = float(end - start)
    if unit in _DAYS_PER:
        result = difference / 86400.0 / _DAYS_PER[unit]
    elif unit in _SECONDS_PER:
        result = difference / _SECONDS_PER[unit]
    else:
        return None
    signed = len(args) > 3 and is_true(args[3])
    return _finite(result if signed else abs(result))


class _Evaluation:
    """One evaluation: the record's values, the study's missing codes and today's date."""

    __slots__ = ("missing_codes", "today", "values")

    def __init__(self, values: Mapping[str, Any], missing_codes: frozenset[str], today: int):
        self.values = values
        self.missing_codes = missing_codes
        self.today = today

    def run(self, node: Expr) -> _Value:
        match node:
            case Field(name):
                return _scalar(self.values.get(name), self.missing_codes)
            case Checkbox(name, code):
                return "1" if code in self._ticked(name) else "0"
            case Str(value):
                return value or None
            case Num(value) | Bool(value):
                return value
            case Op(op, args):
                return self._operator(op, args)
            case Call("if", (condition, then, otherwise)):
                return self.run(then if is_true(self.run(condition)) else otherwise)
            case Call("datediff", args):
                return _datediff([self.run(arg) for arg in args], self.today)
            case Call(name, args):
                return _FUNCTIONS[name]([self.run(arg) for arg in args])
        raise TypeError(f"not a logic expression: {node!r}")

    def _ticked(self, name: str) -> list[str]:
        raw = self.values.get(name)
        if isinstance(raw, list | tuple):
            return [_raw_text(code) for code in raw]
        text = _raw_text(raw)
        return text.split(",") if text else []

    def _operator(self, op: str, args: tuple[Expr, ...]) -> _Value:
        if op == "and":
            return is_true(self.run(args[0])) and is_true(self.run(args[1]))
        if op == "or":
            return is_true(self.run(args[0])) or is_true(self.run(args[1]))
        if op == "not":
            return not is_true(self.run(args[0]))
        if op == "neg":
            x = _number(self.run(args[0]))
            return None if x is None else _finite(-x)
        left, right = self.run(args[0]), self.run(args[1])
        if op == "=":
            return _equal(left, right)
        if op == "<>":
            return not _equal(left, right)
        if op in _ORDER:
            return _order(op, left, right)
        return _arithmetic(op, left, right)


def evaluate(
    expr: Expr,
    values: Mapping[str, Any],
    missing_codes: Collection[str] = (),
    today: date | None = None,
) -> Any:
    """Evaluate *expr* over *values* (field name -> stored value; absent = blank).

    Returns None (blank), a bool, a float, or a string (e.g. a field's text returned by
    ``if()``). A missing code comes back as None: to everything outside ``=``/``<>`` it
    is blank. *today* (default: the server's date) is what 'today' means in datediff().
    """
    day = today or date.today()
    evaluation = _Evaluation(values, frozenset(map(str, missing_codes)), _days_from_civil(day.year, day.month, day.day))
    result = evaluation.run(expr)
    return None if isinstance(result, _Missing) else result
