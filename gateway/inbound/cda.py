"""A CDA R2 document as a ``Source`` of the mapping engine.

Parsed by the hardened parser of FHIR XML (``gateway.fhir.xml.parse_document``: no DOCTYPE, no entities, no
network, bounded tree). Selectors are XPath 1.0 with the prefix ``cda`` for ``urn:hl7-org:v3``: ``each`` an
absolute path (``/cda:ClinicalDocument/cda:recordTarget/cda:patientRole``), values relative to the match
(``@extension``, ``cda:patient/cda:birthTime/@value``, ``cda:name/cda:family[@qualifier='BR']``). An element's
value is its text, trimmed. Locations are XPaths too (``/cda:ClinicalDocument/cda:recordTarget/…/@extension``),
with an index where same-named siblings make it necessary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from gateway.errors import GatewayError, InvalidRequest, Issue, IssueCode
from gateway.fhir.xml import parse_document
from gateway.inbound.mapping import MappingError, Match

CDA_NAMESPACE = "urn:hl7-org:v3"
NAMESPACES = {"cda": CDA_NAMESPACE, "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
_PREFIXES = {uri: prefix for prefix, uri in NAMESPACES.items()}


#: Per parent element and tag, each same-named child's position (1-based): kept by a document's ``CdaSource`` for
#: all the locations its mapping asks for. Listing the siblings again for each element named each of n of them in
#: n² (3,000 siblings: 14 s on the event loop).
Positions = dict[tuple[Any, Any], dict[Any, int]]


def xpath_of(node: Any, positions: Positions | None = None) -> str:
    """The XPath of an element (or of an attribute of one: ``(element, name)``)."""
    positions = {} if positions is None else positions
    attribute = None
    if isinstance(node, tuple):
        node, attribute = node
    steps: list[str] = []
    element: etree._Element | None = node
    while element is not None:
        qname = etree.QName(element)
        prefix = _PREFIXES.get(qname.namespace or "")
        name = f"{prefix}:{qname.localname}" if prefix else f"*[local-name()='{qname.localname}']"
        parent = element.getparent()
        if parent is not None:
            same = positions.get((parent, element.tag))
            if same is None:
                same = positions[(parent, element.tag)] = {
                    child: number for number, child in enumerate(parent.iterchildren(element.tag), 1)
                }
            if len(same) > 1:
                name += f"[{same.get(element) or list(parent.iterchildren(element.tag)).index(element) + 1}]"
        steps.append(name)
        element = parent
    path = "/" + "/".join(reversed(steps))
    if attribute is not None:
        attribute_name = etree.QName(attribute)
        prefix = _PREFIXES.get(attribute_name.namespace or "")
        path += f"/@{prefix + ':' if prefix else ''}{attribute_name.localname}"
    return path


def _compiled(selector: str) -> etree.XPath:
    try:
        return etree.XPath(selector, namespaces=NAMESPACES)
    except etree.XPathSyntaxError as exc:
        raise MappingError(f"not an XPath: {selector!r} ({exc})") from exc


_CACHE: dict[str, etree.XPath] = {}


def _xpath(selector: str) -> etree.XPath:
    compiled = _CACHE.get(selector)
    if compiled is None:
        compiled = _CACHE[selector] = _compiled(selector)
    return compiled


@dataclass(frozen=True, slots=True)
class ElementMatch:
    element: etree._Element
    positions: Positions = field(default_factory=dict, compare=False, repr=False)  # its document's (xpath_of)

    def _first(self, selector: str) -> Any:
        result = _xpath(selector)(self.element)
        if isinstance(result, list):
            return result[0] if result else None
        return result

    def value(self, selector: str) -> str | None:
        found = self._first(selector)
        if found is None:
            return None
        if isinstance(found, etree._Element):
            text = " ".join("".join(str(part) for part in found.itertext()).split())
            return text or None
        text = str(found).strip()
        return text or None

    def location(self, selector: str | None = None) -> str:
        if selector is None:
            return xpath_of(self.element, self.positions)
        found = self._first(selector)
        if isinstance(found, etree._Element):
            return xpath_of(found, self.positions)
        if getattr(found, "is_attribute", False):
            return xpath_of((found.getparent(), found.attrname), self.positions)
        return f"{xpath_of(self.element, self.positions)}/{selector}"


@dataclass(frozen=True, slots=True)
class CdaSource:
    tree: etree._ElementTree
    document: bytes = field(default=b"")
    positions: Positions = field(default_factory=dict, compare=False, repr=False)  # for xpath_of

    def each(self, selector: str) -> Sequence[Match]:
        result = _xpath(selector)(self.tree)
        return (
            [ElementMatch(element, self.positions) for element in result if isinstance(element, etree._Element)]
            if isinstance(result, list)
            else []
        )

    def location(self, selector: str) -> str:
        return selector


def read_cda(body: bytes) -> CdaSource:
    """The document parsed and checked to be a CDA: 400 when it is not XML, carries a DOCTYPE, is too large or
    not a ClinicalDocument. Issues name the document's places by XPath (``Issue.location``)."""
    try:
        tree = parse_document(body)
    except GatewayError as exc:
        # The hardened parser names places as FHIRPath; in a CDA they are neither: the diagnostics say it.
        raise type(exc)(
            *(Issue(i.code, i.diagnostics, None, i.issue_type, i.severity, location="/") for i in exc.issues)
        ) from exc
    root = tree.getroot()
    if etree.QName(root).namespace != CDA_NAMESPACE or etree.QName(root).localname != "ClinicalDocument":
        raise InvalidRequest(
            Issue(
                IssueCode.CDA_INVALID,
                f"the root element is <{etree.QName(root).localname}> in {etree.QName(root).namespace!r}, not a CDA "
                f"<ClinicalDocument> in {CDA_NAMESPACE}",
                None,
                "structure",
                location="/",
            )
        )
    return CdaSource(tree, body)
