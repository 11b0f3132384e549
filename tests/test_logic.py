"""The logic language: parser, errors, tree helpers, and Python/JavaScript agreement.

tests/logic_cases.json is the shared table of expected results. Every case is run
through the Python evaluator and, via tests/js/run_logic_cases.js, through the browser
evaluator with the values stringified as a browser would hold them; both must give the
expected result. A property test then compares the two on random expressions.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.logic import (
    LogicError,
    checkbox_refs,
    evaluate,
    format_number,
    is_true,
    parse,
    referenced_fields,
    to_json,
)
from app.logic.nodes import FUNCTIONS, Bool, Call, Checkbox, Field, Num, Op, Str

HERE = Path(__file__).parent
CASES: list[dict[str, Any]] = json.loads((HERE / "logic_cases.json").read_text(encoding="utf-8"))
RUNNER = HERE / "js" / "run_logic_cases.js"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js is needed to run logic.js")


def run(expression: str, values: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    return evaluate(parse(expression), values or {}, **kwargs)


def same(a: Any, b: Any) -> bool:
    """Equal as results: None and '' are both blank; numbers (or numeric text) to 1e-9."""
    if a in (None, "") or b in (None, ""):
        return a in (None, "") and b in (None, "")
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    try:
        x, y = float(a), float(b)
    except ValueError:  # text against a number
        return False
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


def browser_values(values: dict[str, Any]) -> dict[str, Any]:
    """*values* as the browser holds them: text in inputs, lists of codes for checkboxes."""

    def text(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, int | float):
            return format_number(float(value))
        return str(value)

    return {
        name: [text(code) for code in value] if isinstance(value, list) else text(value)
        for name, value in values.items()
    }


def run_js(jobs: list[dict[str, Any]]) -> list[Any]:
    """Evaluate every job ({tree, values, missing_codes, today}) in one Node process."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs_file = Path(tmp) / "logic_jobs.json"
        jobs_file.write_text(json.dumps(jobs), encoding="utf-8")
        completed = subprocess.run(
            [NODE, str(RUNNER), str(jobs_file)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
    results = json.loads(completed.stdout)
    assert len(results) == len(jobs)
    return results


# --- the shared case table -------------------------------------------------------------


def test_case_table_is_substantial() -> None:
    assert len(CASES) >= 60
    assert {"expr", "values", "missing_codes", "today", "expected"} <= set(CASES[0])


@pytest.mark.parametrize("case", CASES, ids=[f"{i}:{c['expr'][:40]}" for i, c in enumerate(CASES)])
def test_case_in_python(case: dict[str, Any]) -> None:
    result = run(
        case["expr"],
        case["values"],
        missing_codes=case["missing_codes"],
        today=date.fromisoformat(case["today"]),
    )
    assert same(result, case["expected"]), f"{case['expr']} gave {result!r}"


@needs_node
def test_cases_in_javascript_agree_with_python() -> None:
    jobs = [
        {
            "tree": to_json(parse(case["expr"])),
            "values": browser_values(case["values"]),
            "missing_codes": case["missing_codes"],
            "today": case["today"],
        }
        for case in CASES
    ]
    js_results = run_js(jobs)
    problems = []
    for case, js in zip(CASES, js_results, strict=True):
        python = run(
            case["expr"],
            case["values"],
            missing_codes=case["missing_codes"],
            today=date.fromisoformat(case["today"]),
        )
        if not (same(js, case["expected"]) and same(js, python)):
            problems.append(f"{case['expr']}: python={python!r} js={js!r} expected={case['expected']!r}")
    assert not problems, "\n".join(problems)


# --- grammar -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "tree"),
    [
        ("1 + 2 * 3", Op("+", (Num(1.0), Op("*", (Num(2.0), Num(3.0)))))),
        ("(1 + 2) * 3", Op("*", (Op("+", (Num(1.0), Num(2.0))), Num(3.0)))),
        ("-2 ^ 2", Op("^", (Op("neg", (Num(2.0),)), Num(2.0)))),
        ("2 ^ 3 ^ 2", Op("^", (Op("^", (Num(2.0), Num(3.0))), Num(2.0)))),
        ("10 - 2 - 3", Op("-", (Op("-", (Num(10.0), Num(2.0))), Num(3.0)))),
        (
            "[a] = 1 or [b] = 2 and [c] = 3",
            Op(
                "or",
                (
                    Op("=", (Field("a"), Num(1.0))),
                    Op("and", (Op("=", (Field("b"), Num(2.0))), Op("=", (Field("c"), Num(3.0))))),
                ),
            ),
        ),
        ("not [a] = 1", Op("not", (Op("=", (Field("a"), Num(1.0))),))),
        ("[a] + 1 > 2 * [b]", Op(">", (Op("+", (Field("a"), Num(1.0))), Op("*", (Num(2.0), Field("b")))))),
        ("[a] != 'x'", Op("<>", (Field("a"), Str("x")))),
        ('[a] <> "x"', Op("<>", (Field("a"), Str("x")))),
        ("TRUE and False", Op("and", (Bool(True), Bool(False)))),
        ("[x] AnD [y] oR NoT [z]", Op("or", (Op("and", (Field("x"), Field("y"))), Op("not", (Field("z"),))))),
        ("[sym(2)]", Checkbox("sym", "2")),
        ("[sym(-1)]", Checkbox("sym", "-1")),
        ("[sym(opt_A)]", Checkbox("sym", "opt_A")),
        (".5", Num(0.5)),
        ("007", Num(7.0)),
        ("ROUND([w], 1)", Call("round", (Field("w"), Num(1.0)))),
        ("  [a]\n  = 1 ", Op("=", (Field("a"), Num(1.0)))),
    ],
)
def test_parse_builds_the_expected_tree(expression: str, tree: object) -> None:
    assert parse(expression) == tree


def test_keywords_inside_names_are_not_keywords() -> None:
    # "order" starts with "or", "android" with "and"; both are (unknown) function names.
    with pytest.raises(LogicError, match="Unknown function 'order'"):
        parse("order(1)")
    assert parse("[notes] = 'x'") == Op("=", (Field("notes"), Str("x")))


def test_datediff_forms_normalise_to_three_or_four_arguments() -> None:
    d1, d2, unit = Field("d1"), Field("d2"), Str("d")
    assert parse("datediff([d1], [d2], 'd')") == Call("datediff", (d1, d2, unit))
    assert parse("datediff([d1], [d2], 'd', 'ymd')") == Call("datediff", (d1, d2, unit))
    assert parse("datediff([d1], [d2], 'd', true)") == Call("datediff", (d1, d2, unit, Bool(True)))
    assert parse("datediff([d1], [d2], 'd', 'mdy', true)") == Call("datediff", (d1, d2, unit, Bool(True)))


def test_parse_is_cached() -> None:
    assert parse("[a] = 1 and [b] = 2") is parse("[a] = 1 and [b] = 2")


# --- parse errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "position", "message", "hint"),
    [
        ("foo([a])", 0, "Unknown function 'foo'", "one of datediff"),
        ("[a] = 1 and bar(1)", 12, "Unknown function 'bar'", "one of"),
        ("round(1, 2, 3)", 0, "round() takes 1 or 2 arguments but was given 3", ""),
        ("if(1, 2)", 0, "if() takes exactly 3 arguments but was given 2", ""),
        ("max()", 0, "max() takes at least 1 argument but was given 0", ""),
        ("datediff([a], [b])", 0, "datediff() takes 3 to 5 arguments but was given 2", ""),
        ("datediff([a], [b], 'w')", 0, "Unknown datediff() unit 'w'", "'y', 'M', 'd'"),
        ("([a] + 1", 8, "Unexpected end of expression", "')' or an operator"),
        ("[a] + 1)", 7, "Unexpected ')'", "an operator or the end of the expression"),
        ("[a] = (1 + )", 11, "Unexpected ')'", "a value"),
        ("round([a], 2", 12, "Unexpected end of expression", "')', ',' or an operator"),
        ("[a] = 1 @ 2", 8, "Unexpected character '@'", "an operator"),
        ("[a] = 1 2", 8, "Unexpected '2'", "an operator or the end of the expression"),
        ("[a] = = 1", 6, "Unexpected '='", "a value"),
        ("[a] = 1 and", 11, "Unexpected end of expression", "a value"),
        ("[Age] > 1", 0, "Invalid field reference [Age]", "lower-case field name"),
        ("[a > 1", 0, "Missing ']'", "a field"),
        ("[a] = 'abc", 6, "Unterminated string", "a closing '"),
        ("[a] = yes", 6, "Unknown word 'yes'", "text in quotes such as 'yes'"),
        ("[x] = round", 11, "Unexpected end of expression", "'('"),
        ("[a] = not [b]", 6, "Unexpected 'not'", "put 'not …' in parentheses"),
        ("[a] = not([b])", 6, "Unexpected 'not'", "put 'not …' in parentheses"),
        ("1 + and(2)", 4, "Unexpected 'and'", "a value"),
        ("1 < [a] < 3", 8, "Comparisons cannot be chained", "'and' between two comparisons"),
        ("1e5", 1, "Unexpected 'e5'", ""),
        ("9" * 400, 0, "Number too large", ""),
        ("   ", 0, "The expression is empty", ""),
    ],
)
def test_parse_errors_say_where_and_what(expression: str, position: int, message: str, hint: str) -> None:
    with pytest.raises(LogicError) as caught:
        parse(expression)
    error = caught.value
    assert error.expression == expression
    assert error.position == position
    assert error.message == message
    assert hint in error.hint
    assert str(error).startswith(f"{message} at column {position + 1} in ")


def test_parse_error_message_reads_as_plain_english() -> None:
    with pytest.raises(LogicError) as caught:
        parse("[a] = (1 + )")
    assert str(caught.value) == (
        "Unexpected ')' at column 12 in '[a] = (1 + )': expected a value such as a number, a 'string', a [field] or '('"
    )


def test_parse_error_in_multiline_expression_gives_line_and_column() -> None:
    with pytest.raises(LogicError) as caught:
        parse("[a] = '1'\nand ([b] = '2'))")
    assert (caught.value.line, caught.value.column) == (2, 16)
    assert "at line 2, column 16" in str(caught.value)


def test_logic_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse(")")


# --- tree helpers ----------------------------------------------------------------------


def test_referenced_fields_and_checkbox_refs() -> None:
    tree = parse("if([sym(2)] = '1' or [sym(-1)] = '1', datediff([dob], 'today', 'y'), [w] / [h] ^ 2)")
    assert referenced_fields(tree) == frozenset({"sym", "dob", "w", "h"})
    assert checkbox_refs(tree) == frozenset({("sym", "2"), ("sym", "-1")})
    assert referenced_fields(parse("1 + 2")) == frozenset()
    assert checkbox_refs(parse("[sym] = ''")) == frozenset()


def test_to_json_shape() -> None:
    tree = parse("not [a] = 1 and [cb(2)] <> 'x' or round(-[b] ^ 2.5, 1) > true")
    assert to_json(tree) == {
        "t": "op",
        "op": "or",
        "args": [
            {
                "t": "op",
                "op": "and",
                "args": [
                    {
                        "t": "op",
                        "op": "not",
                        "args": [{"t": "op", "op": "=", "args": [{"t": "field", "name": "a"}, {"t": "num", "v": 1.0}]}],
                    },
                    {
                        "t": "op",
                        "op": "<>",
                        "args": [{"t": "checkbox", "name": "cb", "code": "2"}, {"t": "str", "v": "x"}],
                    },
                ],
            },
            {
                "t": "op",
                "op": ">",
                "args": [
                    {
                        "t": "fn",
                        "name": "round",
                        "args": [
                            {
                                "t": "op",
                                "op": "^",
                                "args": [
                                    {"t": "op", "op": "neg", "args": [{"t": "field", "name": "b"}]},
                                    {"t": "num", "v": 2.5},
                                ],
                            },
                            {"t": "num", "v": 1.0},
                        ],
                    },
                    {"t": "bool", "v": True},
                ],
            },
        ],
    }
    assert json.loads(json.dumps(to_json(tree))) == to_json(tree)


# --- evaluation details not covered by the table --------------------------------------


@pytest.mark.parametrize(
    ("result", "truth"),
    [
        (True, True),
        (False, False),
        (1.0, True),
        (-0.5, True),
        (0.0, False),
        (3, True),
        ("1", True),
        ("0.0", False),
        ("abc", False),
        ("", False),
        (None, False),
        (float("nan"), False),
    ],
)
def test_is_true(result: Any, truth: bool) -> None:
    assert is_true(result) is truth


def test_evaluation_never_raises_on_bad_data() -> None:
    bad = {
        "a": object(),
        "b": float("nan"),
        "c": 10**400,
        "d": [1, None, "x"],
        "e": float("inf"),
        "f": "2026-13-45",
        "g": "\ud800",
    }
    for name in bad:
        for expression in (
            f"[{name}] + 1",
            f"[{name}] > 1",
            f"[{name}] = 'x'",
            f"round([{name}], 2)",
            f"datediff([{name}], 'today', 'd')",
            f"contains([{name}], 'x')",
            f"[{name}(1)] = '1'",
            f"sum([{name}], 1)",
        ):
            evaluate(parse(expression), bad)  # must not raise
    assert run("[c] + 1", bad) is None
    assert run("[b] = ''", bad) is True
    assert run("[d]", bad) == "1,,x"
    assert run("10 ^ 400") is None
    assert run("round(2.5, 400)") == 2.5
    assert run("round(2.5, -400)") == 0


def test_today_defaults_to_the_current_date() -> None:
    assert run("datediff([d], 'today', 'd', true)", {"d": date.today().isoformat()}) == 0


def test_checkbox_value_may_be_a_comma_separated_string() -> None:
    assert run("[cb(2)]", {"cb": "1,2"}) == "1"
    assert run("[cb(3)]", {"cb": "1,2"}) == "0"


def test_numbers_and_numeric_text_behave_alike() -> None:
    for value in (5, 5.0, "5", "5.0", "005"):
        assert run("[a] = 5 and [a] + 1 = 6 and [a] > 4.5 and [a] = '5'", {"a": value}) is True


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (5.0, "5"),
        (-2.5, "-2.5"),
        (0.0, "0"),
        (-0.0, "0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1.5e-7, "1.5e-7"),
        (0.000001, "0.000001"),
        (123456789.125, "123456789.125"),
        (2.0**70, "1.1805916207174113e+21"),
    ],
)
def test_format_number_matches_javascript_string(number: float, text: str) -> None:
    assert format_number(number) == text


@needs_node
@settings(max_examples=3, deadline=None, database=None, derandomize=True)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=200, max_size=200))
def test_format_number_agrees_with_javascript(numbers: list[float]) -> None:
    # contains() both ways holds exactly when the two texts are identical.
    jobs = []
    for number in numbers:
        num, text = {"t": "num", "v": number}, {"t": "str", "v": format_number(number)}
        tree = {
            "t": "op",
            "op": "and",
            "args": [
                {"t": "fn", "name": "contains", "args": [num, text]},
                {"t": "fn", "name": "contains", "args": [text, num]},
            ],
        }
        jobs.append({"tree": tree, "values": {}, "missing_codes": [], "today": "2026-01-15"})
    results = run_js(jobs)
    assert [n for n, ok in zip(numbers, results, strict=True) if ok is not True] == []


def test_every_function_is_implemented() -> None:
    for name, (low, _high) in FUNCTIONS.items():
        args = ", ".join(["'d'"] * low)
        evaluate(parse(f"{name}({args})"), {})  # must not raise KeyError


# --- property: Python and JavaScript agree on random expressions ------------------------

FIELD_NAMES = ("a", "b", "c", "d")
LEAVES = st.one_of(
    st.sampled_from([f"[{name}]" for name in FIELD_NAMES]),
    st.sampled_from(["[cb]", "[cb(1)]", "[cb(2)]", "true", "false", "'today'"]),
    st.integers(0, 20).map(str),
    st.sampled_from(["0.5", "2.5", ".25", "007"]),
    st.sampled_from(["'1'", "''", "'abc'", "'ABC'", "'NR'", "'-99'", "'2026-01-01'", "'2.50'", "'é'"]),
)
BINARY = ["and", "or", "=", "<>", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "^"]
UNITS = st.sampled_from(["'y'", "'M'", "'d'", "'h'", "'m'", "'s'", "[d]"])


def _call(name: str, children: st.SearchStrategy[str], low: int, high: int) -> st.SearchStrategy[str]:
    return st.lists(children, min_size=low, max_size=high).map(lambda args: f"{name}({', '.join(args)})")


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    calls = [
        _call(name, children, low, 4 if high is None else high)
        for name, (low, high) in FUNCTIONS.items()
        if name != "datediff"
    ]
    datediff = st.tuples(children, children, UNITS, st.sampled_from(["", ", true", ", 'ymd', false", ", [c]"])).map(
        lambda parts: f"datediff({parts[0]}, {parts[1]}, {parts[2]}{parts[3]})"
    )
    return st.one_of(
        st.tuples(children, st.sampled_from(BINARY), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda child: f"(not {child})"),
        children.map(lambda child: f"-({child})"),
        datediff,
        *calls,
    )


EXPRESSIONS = st.recursive(LEAVES, _extend, max_leaves=8)
SCALARS = st.one_of(
    st.none(),
    st.just(""),
    st.integers(-50, 50),
    st.integers(-5000, 5000).map(lambda n: n / 100),
    st.sampled_from(
        [
            "007",
            "1.0",
            "-.5",
            " 5 ",
            "abc",
            "ABC",
            "NR",
            "UNK",
            "-99",
            "d",
            "y",
            "é",
            "😀",
            "1,2",
            "2026-01-01",
            "2025-12-31 23:59",
            "2024-02-29T12:00:30",
            "2026-02-30",
            "today",
        ]
    ),
)
VALUES = st.fixed_dictionaries(
    {name: SCALARS for name in FIELD_NAMES},
    optional={"cb": st.lists(st.sampled_from(["1", "2", "3"]), unique=True)},
)
EXAMPLES = st.tuples(
    EXPRESSIONS,
    VALUES,
    st.lists(st.sampled_from(["NR", "UNK", "-99"]), unique=True),
    st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31)),
)


@needs_node
@settings(
    max_examples=4,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(EXAMPLES, min_size=75, max_size=75))
def test_python_and_javascript_agree_on_random_expressions(
    examples: list[tuple[str, dict[str, Any], list[str], date]],
) -> None:
    jobs, python_results = [], []
    for expression, values, missing_codes, today in examples:
        tree = parse(expression)
        python_results.append(evaluate(tree, values, missing_codes, today))
        jobs.append(
            {
                "tree": to_json(tree),
                "values": browser_values(values),
                "missing_codes": missing_codes,
                "today": today.isoformat(),
            }
        )
    js_results = run_js(jobs)
    disagreements = [
        f"{example[0]} with {example[1]} / {example[2]}: python={python!r} js={js!r}"
        for example, python, js in zip(examples, python_results, js_results, strict=True)
        if not same(python, js)
    ]
    assert not disagreements, "\n".join(disagreements)
