"""Which line of a pasted document an issue names: by its FHIRPath ``expression`` (JSON or XML FHIR), its XPath
``location`` (a CDA document, DESIGN §13) or its HL7 v2 location (``SEG^sequence^field…``, the ERL of an ERR-2).

Pure and forgiving: the deepest element of the path that the document has is the answer (a path through a
function this reader does not evaluate — ``where(…)`` — stops there), and None when nothing of it is found.
Lines are numbered from 1, a line ending being ``\\r\\n``, ``\\r`` or ``\\n`` — as the console shows them.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from gateway.fhir.xml import hardened_parser

FHIR_NS = "http://hl7.org/fhir"
_LINE_END = re.compile(r"\r\n|\r|\n")
_V2_LOCATION = re.compile(r"^([A-Z][A-Z0-9]{2})(?:\^(\d+))?")
_STEP = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\((.*)\))?(?:\[(\d+)\])?$")


def lines_of(text: str) -> list[str]:
    return _LINE_END.split(text)


def _line_starts(text: str) -> list[int]:
    return [0, *(match.end() for match in _LINE_END.finditer(text))]


def fhirpath_steps(expression: str) -> list[str]:
    """``Bundle.entry[1].resource.extension('url').value`` → its steps, dots inside () or quotes kept."""
    steps, depth, quote, current = [], 0, False, ""
    for char in expression:
        if char == "'" and depth:
            quote = not quote
        elif not quote and char in "([":
            depth += 1
        elif not quote and char in ")]":
            depth -= 1
        if char == "." and not depth and not quote:
            steps.append(current)
            current = ""
        else:
            current += char
    steps.append(current)
    return [step.strip() for step in steps if step.strip()]


# --- JSON: a tree of the document's values, each with the line it starts on ---


@dataclass
class _Node:
    line: int
    value: Any = None  # a scalar's value
    members: dict[str, _Node] = field(default_factory=dict)  # an object's, keyed; the node's line is the key's
    items: list[_Node] | None = None  # an array's


class _JsonReader:
    def __init__(self, text: str) -> None:
        self.text, self.position = text, 0
        self.starts = _line_starts(text)

    def line(self, position: int) -> int:
        return bisect.bisect_right(self.starts, position)

    def _space(self) -> None:
        while self.position < len(self.text) and self.text[self.position] in " \t\r\n":
            self.position += 1

    def _string(self) -> str:
        end = self.position + 1
        while end < len(self.text) and self.text[end] != '"':
            end += 2 if self.text[end] == "\\" else 1
        raw = self.text[self.position + 1 : end]
        self.position = end + 1
        return raw

    def value(self, line: int | None = None) -> _Node:
        self._space()
        here = self.line(self.position) if line is None else line
        char = self.text[self.position : self.position + 1]
        if char == "{":
            node = _Node(here)
            self.position += 1
            while True:
                self._space()
                if self.text[self.position : self.position + 1] in ("}", ""):
                    self.position += 1
                    return node
                if self.text[self.position] == ",":
                    self.position += 1
                    continue
                key_line = self.line(self.position)
                key = self._string()
                self._space()
                self.position += 1  # ":"
                node.members[key] = self.value(key_line)
        if char == "[":
            node = _Node(here, items=[])
            self.position += 1
            while True:
                self._space()
                if self.text[self.position : self.position + 1] in ("]", ""):
                    self.position += 1
                    return node
                if self.text[self.position] == ",":
                    self.position += 1
                    continue
                assert node.items is not None
                node.items.append(self.value())
        if char == '"':
            return _Node(here, self._string())
        end = self.position
        while end < len(self.text) and self.text[end] not in ",}] \t\r\n":
            end += 1
        if end == self.position:
            raise ValueError("not JSON")
        node = _Node(here, self.text[self.position : end])
        self.position = end
        return node


def _json_member(node: _Node, name: str) -> _Node | None:
    if name in node.members:
        return node.members[name]
    for key, member in node.members.items():  # a choice type: value → valueString
        if key.startswith(name) and key[len(name) : len(name) + 1].isupper():
            return member
    return None


def _json_tree(text: str) -> _Node | None:
    try:
        return _JsonReader(text).value()
    except (ValueError, IndexError):
        return None


def _json_line(tree: _Node, expression: str) -> int | None:
    node: _Node | None = tree
    assert node is not None
    steps = fhirpath_steps(expression)
    if steps and node.members.get("resourceType") is not None and steps[0] == node.members["resourceType"].value:
        steps = steps[1:]
    found = node.line
    for step in steps:
        match = _STEP.match(step)
        if match is None or node is None:
            break
        name, argument, index = match.groups()
        if node.items is not None:  # a path without an index through a list: its first item
            node = node.items[0] if node.items else None
            if node is None:
                break
        if argument is not None:
            if name == "extension" and argument.strip("'\""):
                url = argument.strip().strip("'\"")
                extensions = _json_member(node, "extension")
                node = next(
                    (e for e in (extensions.items or []) if (u := e.members.get("url")) and u.value == url), None
                ) if extensions is not None else None  # fmt: skip
            elif name in ("ofType", "as", "first", "resolve"):
                continue
            else:
                break  # where(…) and the rest: not evaluated here
        else:
            node = _json_member(node, name)
        if node is None:
            break
        if index is not None:
            if node.items is None or int(index) >= len(node.items):
                found = node.line
                break
            node = node.items[int(index)]
        found = node.line
    return found


# --- XML: FHIR paths over elements, XPath, each element's sourceline ---


def _xml_root(text: str) -> etree._Element | None:
    try:
        return etree.fromstring(text.encode(), hardened_parser())
    except etree.XMLSyntaxError:
        return None


def _line(element: etree._Element) -> int | None:
    line: Any = element.sourceline  # lxml-stubs type it as int or Ellipsis
    return line if isinstance(line, int) else None


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _xml_children(element: etree._Element, name: str) -> list[etree._Element]:
    exact = [child for child in element if _local(child) == name]
    if exact:
        return exact
    return [
        child
        for child in element
        if _local(child).startswith(name) and _local(child)[len(name) : len(name) + 1].isupper()
    ]


def _xml_fhirpath_line(root: etree._Element, expression: str) -> int | None:
    steps = fhirpath_steps(expression)
    if steps and steps[0] == _local(root):
        steps = steps[1:]
    element, found = root, _line(root)
    for step in steps:
        match = _STEP.match(step)
        if match is None:
            break
        name, argument, index = match.groups()
        if argument is not None:
            if name == "extension":
                url = argument.strip().strip("'\"")
                matches = [child for child in _xml_children(element, "extension") if child.get("url") == url]
            elif name in ("ofType", "as", "first", "resolve"):
                continue
            else:
                break
        else:
            matches = _xml_children(element, name)
        position = int(index) if index is not None else 0
        if position >= len(matches):
            break
        element = matches[position]
        if name == "resource" and len(element):  # <resource><Patient>…: the resource is the wrapped element
            element = element[0]
        found = _line(element)
    return found


def _xpath_line(root: etree._Element, xpath: str) -> int | None:
    # Unprefixed names match by local name: CDA and FHIR documents put everything in a default namespace.
    rewritten = re.sub(
        r"(?<![:@\w\-'\"])([A-Za-z_][\w\-]*)(?=\s*(?:\[|/|$))",
        lambda m: m.group(1) if m.group(1) in ("text", "node") else f"*[local-name()='{m.group(1)}']",
        xpath,
    )
    for candidate in (xpath, rewritten):
        try:
            found = root.xpath(candidate, namespaces={"cda": "urn:hl7-org:v3", "f": FHIR_NS, "hl7": "urn:hl7-org:v3"})
        except etree.XPathError:
            continue
        elements = [item for item in found if isinstance(item, etree._Element)] if isinstance(found, list) else []
        if elements:
            return _line(elements[0])
    return None


def _v2_line(text: str, location: str) -> int | None:
    match = _V2_LOCATION.match(location.strip())
    if match is None:
        return None
    segment, sequence = match.group(1), int(match.group(2) or 1)
    seen = 0
    for number, line in enumerate(lines_of(text), start=1):
        if line.startswith(segment + "|") or line == segment:
            seen += 1
            if seen == sequence:
                return number
    return None


def document_format(text: str) -> str:
    """``json``, ``xml``, ``hl7v2`` or ``text`` by its first characters."""
    start = text.lstrip("\ufeff \t\r\n")[:4]
    if start.startswith(("{", "[")):
        return "json"
    if start.startswith("<"):
        return "xml"
    if start.startswith("MSH") or start.startswith("\x0bMSH"):
        return "hl7v2"
    return "text"


class Document:
    """A pasted document, read once; ``line`` answers for each issue."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.kind = document_format(text)
        self.tree = _json_tree(text) if self.kind == "json" else None
        self.root = _xml_root(text) if self.kind == "xml" else None

    def line(self, expression: str | None = None, location: str | None = None) -> int | None:
        """The line (from 1) that the issue names, or None."""
        if self.kind == "hl7v2":
            return _v2_line(self.text, location or expression or "")
        if self.tree is not None:
            return _json_line(self.tree, expression) if expression else None
        if self.root is not None:
            if location and location.startswith("/"):
                line = _xpath_line(self.root, location)
                if line is not None:
                    return line
            return _xml_fhirpath_line(self.root, expression) if expression else None
        return None


def locate(text: str, expression: str | None = None, location: str | None = None) -> int | None:
    """The line (from 1) of ``text`` that the issue names, or None."""
    return Document(text).line(expression, location)
