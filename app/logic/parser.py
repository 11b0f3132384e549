"""Parse REDCap logic text into the immutable tree of :mod:`app.logic.nodes`.

One LALR grammar serves branching logic, calculations, data-quality rules and API
filters, so a rule means the same thing wherever it is used. Errors are reported in plain
English with a column, because study designers (not programmers) read them.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from app.logic.nodes import DATEDIFF_UNITS, FUNCTIONS, Bool, Call, Checkbox, Expr, Field, Num, Op, Str

# Inline rather than a .lark file so it ships with the code whatever the packaging does.
# Lowest precedence first. Comparisons do not chain ("[a] < [b] < [c]" is almost always a
# mistake, so it is a parse error). Unary minus binds tighter than "^", as in Excel and
# REDCap (-2^2 = 4), and "^" is left-associative like Excel (2^3^2 = 64).
_GRAMMAR = r"""
?start: or_expr

?or_expr: and_expr
        | or_expr OR and_expr          -> or_op
?and_expr: not_expr
         | and_expr AND not_expr       -> and_op
?not_expr: comparison
         | NOT not_expr                -> not_op
?comparison: sum
           | sum COMPARE sum           -> compare
?sum: product
    | sum PLUS product                 -> arith
    | sum MINUS product                -> arith
?product: power
        | product STAR power           -> arith
        | product SLASH power          -> arith
?power: unary
      | power CARET unary              -> arith
?unary: atom
      | MINUS unary                    -> neg
?atom: FIELD                           -> field
     | NUMBER                          -> number
     | STRING                          -> string
     | TRUE                            -> true
     | FALSE                           -> false
     | NAME _LPAR [arguments] _RPAR    -> call
     | _LPAR or_expr _RPAR

arguments: or_expr (_COMMA or_expr)*

// Keywords outrank NAME and need a word boundary, so "order(" lexes as a function name
// rather than "or" followed by "der(".
OR.2: /or\b/i
AND.2: /and\b/i
NOT.2: /not\b/i
TRUE.2: /true\b/i
FALSE.2: /false\b/i
NAME: /[A-Za-z_][A-Za-z0-9_]*/

FIELD: /\[[a-z][a-z0-9_]*(\((-?[0-9]+|[A-Za-z0-9_]+)\))?\]/
NUMBER: /[0-9]+(\.[0-9]+)?|\.[0-9]+/
STRING: /"[^"]*"|'[^']*'/
COMPARE: /<>|!=|<=|>=|=|<|>/
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
CARET: "^"
_LPAR: "("
_RPAR: ")"
_COMMA: ","

%ignore /\s+/
"""

_FIELD_RE = re.compile(r"\[([a-z][a-z0-9_]*)(?:\(([^)]*)\))?\]")
_TRAILING_WORD_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\Z")

# Terminal names grouped for "expected ..." hints; listing every token would not help.
_BINARY_OPERATORS = frozenset({"OR", "AND", "COMPARE", "PLUS", "STAR", "SLASH", "CARET"})
_KEYWORDS = frozenset({"and", "or", "not", "true", "false"})
_VALUE = "a value such as a number, a 'string', a [field] or '('"


class LogicError(ValueError):
    """A logic expression that cannot be parsed.

    *position* is the 0-based offset into *expression*; ``str()`` turns it into a 1-based
    column (and line, for multi-line expressions) because that is what users count.
    *hint* says what would have been valid there ("expected ...").
    """

    def __init__(self, message: str, expression: str, position: int, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression
        self.position = position
        self.hint = hint

    @property
    def line(self) -> int:
        """1-based line of the error."""
        return self.expression.count("\n", 0, self.position) + 1

    @property
    def column(self) -> int:
        """1-based column of the error within its line."""
        return self.position - (self.expression.rfind("\n", 0, self.position) + 1) + 1

    def __str__(self) -> str:
        where = f"column {self.column}"
        if "\n" in self.expression:
            where = f"line {self.line}, {where}"
        text = f"{self.message} at {where} in {self.expression!r}"
        return f"{text}: expected {self.hint}" if self.hint else text


class _NodeError(Exception):
    """Raised while building the tree; turned into a LogicError once the text is known."""

    def __init__(self, message: str, position: int, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.hint = hint


def _misplaced_keyword(word: str, position: int) -> _NodeError:
    """A keyword where it is not allowed, e.g. "[a] = not [b]".

    The contextual lexer reads a keyword as a plain name where the keyword is invalid, so
    without this the user would be told about an unknown function or word called 'not'.
    """
    hint = _VALUE
    if word.lower() == "not":
        hint += " (put 'not …' in parentheses: [a] = (not [b]))"
    return _NodeError(f"Unexpected '{word}'", position, hint)


def _arity_text(low: int, high: int | None) -> str:
    if high is None:
        return f"at least {low} argument{'s' * (low != 1)}"
    if low == high:
        return f"exactly {low} argument{'s' * (low != 1)}"
    if high == low + 1:
        return f"{low} or {high} arguments"
    return f"{low} to {high} arguments"


def _datediff_args(args: tuple[Expr, ...], position: int) -> tuple[Expr, ...]:
    """Normalise datediff's REDCap forms to (d1, d2, unit[, signed]).

    REDCap accepts ``datediff(d1, d2, unit, format, signed)`` and, in newer versions,
    ``datediff(d1, d2, unit, signed)``. A 4th argument that is a string literal is the
    format; stored dates are always ISO, so the format is dropped here once rather than
    being ignored by every evaluator.
    """
    unit = args[2]
    if isinstance(unit, Str) and unit.value not in DATEDIFF_UNITS:
        raise _NodeError(
            f"Unknown datediff() unit '{unit.value}'",
            position,
            "one of " + ", ".join(f"'{u}'" for u in DATEDIFF_UNITS),
        )
    if len(args) == 5:
        return args[:3] + args[4:]
    if len(args) == 4 and isinstance(args[3], Str):
        return args[:3]
    return args


@v_args(inline=True)
class _ToTree(Transformer):
    """Turns lark's parse tree into our nodes, checking function names and arity.

    A separate pass rather than lark's inline transformer so that, on a syntax error,
    the parser can be asked which tokens it would have accepted without building nodes.
    """

    def or_op(self, left: Expr, _op: Token, right: Expr) -> Expr:
        return Op("or", (left, right))

    def and_op(self, left: Expr, _op: Token, right: Expr) -> Expr:
        return Op("and", (left, right))

    def not_op(self, _op: Token, operand: Expr) -> Expr:
        return Op("not", (operand,))

    def compare(self, left: Expr, op: Token, right: Expr) -> Expr:
        return Op("<>" if op == "!=" else str(op), (left, right))

    def arith(self, left: Expr, op: Token, right: Expr) -> Expr:
        return Op(str(op), (left, right))

    def neg(self, _op: Token, operand: Expr) -> Expr:
        return Op("neg", (operand,))

    def field(self, token: Token) -> Expr:
        match = _FIELD_RE.fullmatch(token)
        assert match is not None  # the FIELD terminal guarantees the shape
        name, code = match.groups()
        return Field(name) if code is None else Checkbox(name, code)

    def number(self, token: Token) -> Expr:
        value = float(token)
        if not math.isfinite(value):
            raise _NodeError("Number too large", token.start_pos)
        return Num(value)

    def string(self, token: Token) -> Expr:
        return Str(token[1:-1])

    def true(self, _token: Token) -> Expr:
        return Bool(True)

    def false(self, _token: Token) -> Expr:
        return Bool(False)

    def arguments(self, *args: Expr) -> tuple[Expr, ...]:
        return args

    def call(self, name: Token, args: tuple[Expr, ...] | None) -> Expr:
        function = name.lower()
        if function in _KEYWORDS:
            raise _misplaced_keyword(name, name.start_pos)
        if function not in FUNCTIONS:
            raise _NodeError(f"Unknown function '{name}'", name.start_pos, "one of " + ", ".join(FUNCTIONS))
        args = args or ()
        low, high = FUNCTIONS[function]
        if len(args) < low or (high is not None and len(args) > high):
            raise _NodeError(
                f"{function}() takes {_arity_text(low, high)} but was given {len(args)}",
                name.start_pos,
            )
        if function == "datediff":
            args = _datediff_args(args, name.start_pos)
        return Call(function, args)


_LARK = Lark(_GRAMMAR, parser="lalr", lexer="contextual")
_TO_TREE = _ToTree()


def _expected(terminals: set[str] | frozenset[str]) -> str:
    """Plain-English list of what the parser would have accepted."""
    parts = []
    if "FIELD" in terminals:
        parts.append(_VALUE)
    elif "_LPAR" in terminals:  # straight after a function name
        parts.append("'('")
    if "_RPAR" in terminals:
        parts.append("')'")
    if "_COMMA" in terminals:
        parts.append("','")
    if terminals & _BINARY_OPERATORS:
        parts.append("an operator")
    if "$END" in terminals:
        parts.append("the end of the expression")
    if len(parts) < 2:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def _from_lark(error: UnexpectedInput, expression: str) -> LogicError:
    """Translate lark's exception into a LogicError a study designer can act on."""
    # accepts() replays the parser with each token, so unlike lark's own "expected" set it
    # omits tokens that LALR merged in from other contexts (')' at the top level).
    expected = error.interactive_parser.accepts()
    if isinstance(error, UnexpectedCharacters):
        pos = error.pos_in_stream
        char = expression[pos]
        if char == "[":
            end = expression.find("]", pos)
            if end == -1:
                return LogicError("Missing ']'", expression, pos, "a field such as [age]")
            return LogicError(
                f"Invalid field reference {expression[pos : end + 1]}",
                expression,
                pos,
                "a lower-case field name such as [age] or a checkbox option such as [sym(2)]",
            )
        if char in "'\"":
            return LogicError("Unterminated string", expression, pos, f"a closing {char}")
        return LogicError(f"Unexpected character {char!r}", expression, pos, _expected(expected))
    assert isinstance(error, UnexpectedToken)  # the only other error an LALR parse raises
    token = error.token
    if token.type == "$END":
        pos = len(expression.rstrip())
        message = "Unexpected end of expression"
    else:
        pos = token.start_pos
        message = f"Unexpected {token.value}" if token.type == "STRING" else f"Unexpected '{token}'"
    if token.type == "COMPARE" and "COMPARE" not in expected and expected & _BINARY_OPERATORS:
        return LogicError(
            "Comparisons cannot be chained",
            expression,
            pos,
            "'and' between two comparisons, e.g. [a] < [b] and [b] < [c]",
        )
    if expected == {"_LPAR"}:
        # Only reachable straight after a bare word: usually unquoted text ([x] = yes).
        word = _TRAILING_WORD_RE.search(expression, 0, pos)
        if word and word.group(1).lower() in _KEYWORDS:
            keyword = _misplaced_keyword(word.group(1), word.start(1))
            return LogicError(keyword.message, expression, keyword.position, keyword.hint)
        if word and word.group(1).lower() not in FUNCTIONS:
            return LogicError(
                f"Unknown word '{word.group(1)}'",
                expression,
                word.start(1),
                f"text in quotes such as '{word.group(1)}' or a function call",
            )
    return LogicError(message, expression, pos, _expected(expected))


@lru_cache(maxsize=4096)
def parse(expression: str) -> Expr:
    """Parse *expression*; cached because forms re-parse the same rules on every request.

    Raises LogicError (with a column and what was expected) if it is not valid logic.
    """
    if not expression.strip():
        raise LogicError("The expression is empty", expression, 0)
    try:
        return _TO_TREE.transform(_LARK.parse(expression))
    except UnexpectedInput as error:
        raise _from_lark(error, expression) from None
    except VisitError as error:
        if isinstance(error.orig_exc, _NodeError):
            node_error = error.orig_exc
            raise LogicError(node_error.message, expression, node_error.position, node_error.hint) from None
        raise
