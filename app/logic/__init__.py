"""The study's logic language: REDCap syntax, one parser, one tree, two evaluators.

Branching logic, calculated fields, data-quality rules and API filters are all parsed by
``parse()`` into the same immutable tree. The server evaluates it with ``evaluate()``;
the browser evaluates ``to_json(tree)`` with ``app/static/js/logic.js``, which implements
the same semantics so a field hidden on screen is also hidden (and cleared) on save.
Nothing is ever ``eval``-ed. See ``nodes`` for the JSON shape and ``evaluator`` for the
value semantics.
"""

from app.logic.evaluator import evaluate, format_number, is_true
from app.logic.nodes import Expr, checkbox_refs, referenced_fields, to_json
from app.logic.parser import LogicError, parse

__all__ = [
    "Expr",
    "LogicError",
    "checkbox_refs",
    "evaluate",
    "format_number",
    "is_true",
    "parse",
    "referenced_fields",
    "to_json",
]
