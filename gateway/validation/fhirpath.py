"""A fast path for the simple FHIRPath most invariants are written in, compiled once into Python closures.

fhirpathpy interprets its syntax tree on every call (0.03–0.5 ms an invariant, DESIGN §9); most R4 and DAC
invariants use a small part of the language — member paths, ``exists()`` / ``empty()`` / ``count()`` /
``where()`` / ``all()`` / ``first()`` / ``not()`` / ``hasValue()``, ``is()`` / ``ofType()``, ``contains()`` /
``startsWith()`` / ``matches()`` on strings, ``select()`` / ``isDistinct()``, ``=`` / ``!=`` / comparisons, ``|``
(union of primitive values), ``+`` on numbers, ``&`` on strings, ``and`` / ``or`` / ``xor`` / ``implies`` with
FHIRPath's empty-propagating logic, ``%resource``. ``compile_native`` compiles such an expression; anything
outside that part (``descendants()``, ``resolve()``, …) gives None and the invariant is
evaluated by fhirpathpy, as is any evaluation the fast path finds itself unable to decide (``Unsupported``).
tests/validation/test_fhirpath.py checks both agree on every invariant over every example.

Choice elements are read as the specification writes them: ``value.ofType(Coding)`` finds ``valueCoding``, and
only a key whose suffix is an R4 type name is one (``periodMax`` is not ``period``, ``patientInstruction`` is not
``patient``). String literals are unescaped by FHIRPath's table (``\\'``, ``\\n``, ``\\uXXXX``, …); any other
backslash is kept, so a ``matches()`` pattern reaches ``re`` as written (``'\\d+'``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.validation.definitions import structure_definitions

Collection = list[Any]
Env = dict[str, Any]
Compiled = Callable[[Collection, Env], Collection]


class Unsupported(Exception):
    """The expression, or this evaluation of it, is outside the fast path: fhirpathpy decides."""


@dataclass(frozen=True, slots=True)
class Typed:
    """A value reached through a choice element (``valueCoding``): its FHIR type is known."""

    type_code: str
    value: Any


_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<number>\d+(?:\.\d+)?)|(?P<op><=|>=|!=|=|<|>|\(|\)|\.|,|\||&|\+)"
    r"|(?P<name>[%$]?[A-Za-z_][A-Za-z0-9_]*|`[^`]+`))"
)


_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_ESCAPE = re.compile(r"\\(u[0-9A-Fa-f]{4}|.)", re.DOTALL)


def _unescape(text: str) -> str:
    """A string literal's value: FHIRPath's escapes are replaced, any other backslash is kept as written."""

    def replace(match: re.Match[str]) -> str:
        escaped = match.group(1)
        if len(escaped) == 5:
            return chr(int(escaped[1:], 16))
        return _ESCAPES.get(escaped, match.group(0))

    return _ESCAPE.sub(replace, text)


@functools.cache
def choice_suffixes() -> dict[str, str]:
    """How a choice element's key may end (``Coding``, ``DateTime``, …) → its type (``Coding``, ``dateTime``): the R4
    type names, from the data types the engine loads and every type a ``[x]`` element of their snapshots allows."""
    names: set[str] = set()
    for definition in structure_definitions().values():
        if definition.get("kind") in ("primitive-type", "complex-type"):
            names.add(str(definition["type"]))
        for element in (definition.get("snapshot") or {}).get("element") or []:
            if str(element.get("path", "")).endswith("[x]"):
                names.update(str(type_["code"]) for type_ in element.get("type") or [] if "code" in type_)
    return {name[0].upper() + name[1:]: name for name in names if name and "." not in name and "/" not in name}


def _tokens(expression: str) -> list[str]:
    tokens, position = [], 0
    expression = expression.strip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None or match.end() == position:
            raise Unsupported(expression[position:])
        tokens.append(match.group(0).strip())
        position = match.end()
    return tokens


def _unwrap(item: Any) -> Any:
    return item.value if isinstance(item, Typed) else item


def _singleton(collection: Collection) -> Any:
    if len(collection) > 1:
        raise Unsupported("a singleton was expected")
    return _unwrap(collection[0]) if collection else None


def _truth(collection: Collection) -> bool | None:
    """FHIRPath's singleton evaluation of collections as booleans (None: empty)."""
    if not collection:
        return None
    value = _singleton(collection)
    if isinstance(value, bool):
        return value
    return True  # a single non-boolean item counts as true


def _member(items: Collection, name: str) -> Collection:
    found: Collection = []
    for item in items:
        node = _unwrap(item)
        if not isinstance(node, dict):
            continue
        if name in node:
            value = node[name]
            found.extend(value if isinstance(value, list) else [value])
        elif f"_{name}" in node:
            raise Unsupported("a primitive known only by its extensions")
        else:
            suffixes = choice_suffixes()
            for key, value in node.items():  # a choice element: value → valueCoding, valueAddress, …
                if isinstance(key, str) and key.startswith(name) and key[len(name) :] in suffixes:
                    found.append(Typed(suffixes[key[len(name) :]], value))
                elif isinstance(key, str) and key.startswith(f"_{name}") and key[len(name) + 1 :] in suffixes:
                    raise Unsupported("a choice primitive known only by its extensions")
    return found


def _is_type(item: Any, type_code: str) -> bool:
    if isinstance(item, Typed):
        return item.type_code == type_code
    if isinstance(item, dict) and "resourceType" in item:
        return bool(item["resourceType"] == type_code)
    if isinstance(item, bool):
        return type_code == "boolean"
    if isinstance(item, str):
        raise Unsupported("the type of a string depends on the model")
    raise Unsupported("the type of an element depends on the model")


def _compare(op: str, left: Collection, right: Collection) -> Collection:
    if not left or not right:
        return []
    a, b = _singleton(left), _singleton(right)
    if op == "=":
        return [a == b]
    if op == "!=":
        return [a != b]
    numbers = (int, float)
    if not isinstance(a, numbers) or not isinstance(b, numbers) or isinstance(a, bool) or isinstance(b, bool):
        raise Unsupported("ordering of anything but numbers (dates need FHIRPath's precision rules)")
    return [{"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]]


def _and(left: bool | None, right: bool | None) -> bool | None:
    if left is False or right is False:
        return False
    return None if left is None or right is None else True


def _or(left: bool | None, right: bool | None) -> bool | None:
    if left is True or right is True:
        return True
    return None if left is None or right is None else False


def _implies(left: bool | None, right: bool | None) -> bool | None:
    if left is False or right is True:
        return True
    if left is True:
        return right
    return None


def _xor(left: bool | None, right: bool | None) -> bool | None:
    return None if left is None or right is None else left != right


_LOGIC = {"and": _and, "or": _or, "xor": _xor, "implies": _implies}
_PRECEDENCE = (("implies",), ("or", "xor"), ("and",))


class _Parser:
    def __init__(self, expression: str) -> None:
        self.tokens = _tokens(expression)
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise Unsupported(f"expected {expected}, found {token}")
        self.position += 1
        return token

    def parse(self) -> Compiled:
        compiled = self.logic(0)
        if self.peek() is not None:
            raise Unsupported(f"unexpected {self.peek()}")
        return compiled

    def logic(self, level: int) -> Compiled:
        if level == len(_PRECEDENCE):
            return self.comparison()
        left = self.logic(level + 1)
        while self.peek() in _PRECEDENCE[level]:
            combine = _LOGIC[self.take()]
            right = self.logic(level + 1)
            left = _logic_node(combine, left, right)
        return left

    def comparison(self) -> Compiled:
        left = self.union()
        if self.peek() in ("=", "!=", "<", ">", "<=", ">="):
            op = self.take()
            right = self.union()

            def compare(items: Collection, env: Env) -> Collection:
                return _compare(op, left(items, env), right(items, env))

            return compare
        return left

    def union(self) -> Compiled:
        compiled = self.additive()
        while self.peek() == "|":
            self.take("|")
            compiled = _union(compiled, self.additive())
        return compiled

    def additive(self) -> Compiled:
        compiled = self.path()
        while self.peek() in ("+", "&"):
            compiled = (_plus if self.take() == "+" else _concatenate)(compiled, self.path())
        return compiled

    def path(self) -> Compiled:
        compiled = self.primary()
        while self.peek() == ".":
            self.take(".")
            compiled = self.invocation(compiled)
        return compiled

    def primary(self) -> Compiled:
        token = self.take()
        if token == "(":
            inner = self.logic(0)
            self.take(")")
            return inner
        if token.startswith("'"):
            text = _unescape(token[1:-1])
            return lambda items, env: [text]
        if token[0].isdigit():
            number = float(token) if "." in token else int(token)
            return lambda items, env: [number]
        if token in ("true", "false"):
            boolean = token == "true"
            return lambda items, env: [boolean]
        if token in ("%resource", "%rootResource"):
            key = token[1:]
            return lambda items, env: [env[key]]
        if token == "$this":
            return lambda items, env: items
        if token in _FUNCTIONS and self.peek() == "(":  # where(…) on the focus itself
            self.position -= 1
            return self.invocation(lambda items, env: items)
        if token.startswith(("%", "$")) or token in _LOGIC:
            raise Unsupported(token)
        if token[0].isupper():
            raise Unsupported("a type name where a path starts")
        name = token.strip("`")
        return lambda items, env: _member(items, name)

    def invocation(self, source: Compiled) -> Compiled:
        name = self.take().strip("`")
        if self.peek() != "(":
            return lambda items, env: _member(source(items, env), name)
        self.take("(")
        if name not in _FUNCTIONS:
            raise Unsupported(f"function {name}()")
        argument: Compiled | str | None = None
        if self.peek() != ")":
            argument = self.take() if name in ("is", "ofType") else self.logic(0)
        self.take(")")
        return _FUNCTIONS[name](source, argument)


def _logic_node(
    combine: Callable[[bool | None, bool | None], bool | None], left: Compiled, right: Compiled
) -> Compiled:
    def evaluate(items: Collection, env: Env) -> Collection:
        result = combine(_truth(left(items, env)), _truth(right(items, env)))
        return [] if result is None else [result]

    return evaluate


def _primitives(collection: Collection) -> list[str | int | float | bool]:
    """The items as plain values; FHIRPath equality of anything else (objects, typed values) is not ours."""
    values = []
    for item in collection:
        if isinstance(item, Typed) or not isinstance(item, (str, int, float, bool)):
            raise Unsupported("equality of complex values")
        values.append(item)
    return values


def _union(left: Compiled, right: Compiled) -> Compiled:
    def evaluate(items: Collection, env: Env) -> Collection:
        merged = _primitives(left(items, env)) + _primitives(right(items, env))
        # dict.fromkeys keeps the order but folds True into 1: such mixes are left to fhirpathpy.
        if any(isinstance(value, bool) for value in merged):
            raise Unsupported("a union with booleans")
        return list(dict.fromkeys(merged))

    return evaluate


def _plus(left: Compiled, right: Compiled) -> Compiled:
    def evaluate(items: Collection, env: Env) -> Collection:
        a, b = left(items, env), right(items, env)
        if not a or not b:
            return []
        x, y = _singleton(a), _singleton(b)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (x, y)):
            raise Unsupported("+ on anything but numbers")
        return [x + y]

    return evaluate


def _concatenate(left: Compiled, right: Compiled) -> Compiled:
    """``&``: string concatenation, an empty operand read as the empty string."""

    def evaluate(items: Collection, env: Env) -> Collection:
        parts = [_singleton(left(items, env)), _singleton(right(items, env))]
        if not all(part is None or isinstance(part, str) for part in parts):
            raise Unsupported("& on anything but strings")
        return ["".join(part or "" for part in parts)]

    return evaluate


def _criterion(argument: Compiled | str | None) -> Compiled:
    if not callable(argument):
        raise Unsupported("a criterion is needed")
    return argument


def _string_argument(argument: Compiled | str | None) -> Compiled:
    if not callable(argument):
        raise Unsupported("an argument is needed")
    return argument


def _no_argument(argument: Compiled | str | None) -> None:
    if argument is not None:
        raise Unsupported("no argument expected")


def _exists(source: Compiled, argument: Compiled | str | None) -> Compiled:
    if argument is None:
        return lambda items, env: [bool(source(items, env))]
    where = _where(source, argument)
    return lambda items, env: [bool(where(items, env))]


def _empty(source: Compiled, argument: Compiled | str | None) -> Compiled:
    _no_argument(argument)
    return lambda items, env: [not source(items, env)]


def _count(source: Compiled, argument: Compiled | str | None) -> Compiled:
    _no_argument(argument)
    return lambda items, env: [len(source(items, env))]


def _first(source: Compiled, argument: Compiled | str | None) -> Compiled:
    _no_argument(argument)
    return lambda items, env: source(items, env)[:1]


def _not(source: Compiled, argument: Compiled | str | None) -> Compiled:
    _no_argument(argument)

    def evaluate(items: Collection, env: Env) -> Collection:
        truth = _truth(source(items, env))
        return [] if truth is None else [not truth]

    return evaluate


def _has_value(source: Compiled, argument: Compiled | str | None) -> Compiled:
    _no_argument(argument)

    def evaluate(items: Collection, env: Env) -> Collection:
        found = source(items, env)
        return [len(found) == 1 and isinstance(_unwrap(found[0]), (str, int, float, bool))]

    return evaluate


def _where(source: Compiled, argument: Compiled | str | None) -> Compiled:
    criterion = _criterion(argument)
    return lambda items, env: [item for item in source(items, env) if _truth(criterion([item], env)) is True]


def _select(source: Compiled, argument: Compiled | str | None) -> Compiled:
    projection = _criterion(argument)
    return lambda items, env: [found for item in source(items, env) for found in projection([item], env)]


def _is_distinct(source: Compiled, argument: Compiled | str | None) -> Compiled:
    _no_argument(argument)

    def evaluate(items: Collection, env: Env) -> Collection:
        values = _primitives(source(items, env))
        if any(isinstance(value, bool) for value in values):
            raise Unsupported("distinctness with booleans")
        return [len(set(values)) == len(values)]

    return evaluate


def _all(source: Compiled, argument: Compiled | str | None) -> Compiled:
    criterion = _criterion(argument)
    return lambda items, env: [all(_truth(criterion([item], env)) is True for item in source(items, env))]


def _is(source: Compiled, argument: Compiled | str | None) -> Compiled:
    if not isinstance(argument, str):
        raise Unsupported("is() takes a type")

    def evaluate(items: Collection, env: Env) -> Collection:
        found = source(items, env)
        return [] if not found else [_is_type(found[0], argument)] if len(found) == 1 else _raise()

    return evaluate


def _of_type(source: Compiled, argument: Compiled | str | None) -> Compiled:
    if not isinstance(argument, str):
        raise Unsupported("ofType() takes a type")
    return lambda items, env: [item for item in source(items, env) if _is_type(item, argument)]


def _raise() -> Collection:
    raise Unsupported("a singleton was expected")


def _string_function(test: Callable[[str, str], bool]) -> Callable[[Compiled, Compiled | str | None], Compiled]:
    def build(source: Compiled, argument: Compiled | str | None) -> Compiled:
        parameter = _string_argument(argument)

        def evaluate(items: Collection, env: Env) -> Collection:
            value, wanted = _singleton(source(items, env)), _singleton(parameter(items, env))
            if value is None or wanted is None:
                return []
            if not isinstance(value, str) or not isinstance(wanted, str):
                raise Unsupported("a string function on a non-string")
            return [test(value, wanted)]

        return evaluate

    return build


_FUNCTIONS: dict[str, Callable[[Compiled, Compiled | str | None], Compiled]] = {
    "exists": _exists,
    "empty": _empty,
    "count": _count,
    "first": _first,
    "not": _not,
    "hasValue": _has_value,
    "where": _where,
    "all": _all,
    "select": _select,
    "isDistinct": _is_distinct,
    "is": _is,
    "ofType": _of_type,
    "contains": _string_function(lambda value, part: part in value),
    "startsWith": _string_function(lambda value, prefix: value.startswith(prefix)),
    "matches": _string_function(lambda value, regex: re.search(regex, value) is not None),
}


def compile_native(expression: str) -> Callable[[Any, Env], bool | None] | None:
    """The invariant as a Python function (node, env → True / False / None for empty), or None when the
    expression is outside the fast path. The function raises ``Unsupported`` when one evaluation is."""
    try:
        compiled = _Parser(expression).parse()
    except Unsupported:
        return None

    def evaluate(node: Any, env: Env) -> bool | None:
        return _truth(compiled([node], env))

    return evaluate
