"""FHIR XML in and out, through a hardened lxml parser.

fhir.resources reads and writes the XML, but it accepts a wrong namespace and resolves nothing safely by itself
(DESIGN §9), so every document is first parsed here: no DTD, no entity expansion, no network, no huge trees. A
DOCTYPE is refused outright (it is how XML bombs and external entities arrive), and the root must be in the FHIR
namespace. Every parser failure becomes a 400 ``InvalidRequest``; a structural failure inside well-formed FHIR XML
a 422 ``InvalidResource`` with the element's FHIRPath.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from lxml import etree
from pydantic import ValidationError

from gateway.errors import InvalidRequest, InvalidResource, Issue, IssueCode, PayloadTooLarge
from gateway.fhir.limits import MAX_BUNDLE_ENTRIES, check_limits, nesting_too_deep
from gateway.fhir.models import issues_from_validation_error, model_class
from gateway.fhir.types import Resource

FHIR_NAMESPACE = "http://hl7.org/fhir"
_XHTML_NAMESPACE = "http://www.w3.org/1999/xhtml"
_FHIR_TAG = f"{{{FHIR_NAMESPACE}}}"
_ENTRY_TAG = f"{_FHIR_TAG}entry"
#: An XML element level becomes up to two JSON levels (an array of objects): the JSON bound, halved.
MAX_XML_DEPTH = 50
#: Elements in one body: a referral has a few hundred. fhir.resources reads some 3,000 to 10,000 a second on one
#: core (bench/xml/bench_xml_attributes.py), so this bounds one body's reading to a few seconds of a thread.
MAX_XML_ELEMENTS = 20_000
#: Same-named siblings (fhir.resources' cost grows with their square): as many as a Bundle's entries.
MAX_XML_REPEATS = MAX_BUNDLE_ENTRIES
#: Attributes plus namespaces in scope on one element: a FHIR element has at most three attributes, an XHTML
#: element of a narrative a handful (R4 narrative.html).
MAX_XML_ATTRIBUTES = 32
#: The attributes R4 XML gives FHIR elements (xml.html): a primitive's value, any element's id, an extension's url.
FHIR_ATTRIBUTES = frozenset({"value", "id", "url"})


#: A date, dateTime, instant or time as written: fhir.resources reads and writes these as Python datetimes
#: (``…41.782Z`` in, ``…41.782000Z`` out to JSON, ``…41.782000+00:00`` out to XML), so each is put back as it came.
_TEMPORAL = re.compile(
    r"^(\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?|\d{2}:\d{2}:\d{2}(\.\d+)?)$"
)
_Visit = Callable[[Any, Any, str, etree._Element], None]


def _is_fhir(element: etree._Element) -> bool:
    return isinstance(element.tag, str) and etree.QName(element).namespace == FHIR_NAMESPACE


def _carries_note(element: etree._Element) -> bool:
    """A primitive element with an id or extensions: what JSON writes in the ``_name`` companion."""
    return element.get("id") is not None or any(
        _is_fhir(child) and etree.QName(child).localname == "extension" for child in element
    )


def _restore_repeats(node: dict[str, Any], name: str, elements: list[etree._Element]) -> None:
    """fhir.resources drops a repeat of a primitive that has only an extension (a data-absent-reason in place of a
    time of day), from the value list but not from the ``_name`` list: the values that remain then sit at the wrong
    indexes, and the extension on the wrong value. Both lists are rebuilt one entry per XML element, null where the
    element has no value, or no id or extension (R4 json.html#primitive)."""
    elements = [child for child in elements if child.get("value") is not None or _carries_note(child)]
    values = [item for item in node[name] if item is not None]
    notes = [note for note in node.get(f"_{name}") or [] if note is not None]
    if len(values) != sum(child.get("value") is not None for child in elements):
        return  # not the loss we know: left as read
    if len(notes) != sum(_carries_note(child) for child in elements):
        return
    next_value, next_note = iter(values), iter(notes)
    node[name] = [next(next_value) if child.get("value") is not None else None for child in elements]
    if notes:
        node[f"_{name}"] = [next(next_note) if _carries_note(child) else None for child in elements]


def _align(node: dict[str, Any], element: etree._Element, visit: _Visit, *, reading: bool = False) -> None:
    """Walk a resource's JSON and its XML side by side: ``visit(container, key, value, xml element)`` for every
    primitive string value (``container[key]`` is the value), extensions on primitives included. Elements of one
    name pair up in order — of a primitive, the JSON values with the elements that have a value; a resource inside
    ``resource`` or ``contained`` is the wrapper's element child. ``reading``: the JSON is fhir.resources' reading
    of this XML, whose lost repeats are restored first (``_restore_repeats``)."""
    children: dict[str, list[etree._Element]] = {}
    for child in element:
        if _is_fhir(child):
            children.setdefault(etree.QName(child).localname, []).append(child)
    for name, elements in children.items():
        value = node.get(name)
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, dict) for item in items):
            for item, child in zip(items, elements, strict=False):
                if isinstance(item, dict):
                    wrapped = [c for c in child if isinstance(c.tag, str)] if "resourceType" in item else []
                    _align(item, wrapped[0] if wrapped else child, visit, reading=reading)
            continue
        if reading and isinstance(value, list) and len(value) != len(elements):
            _restore_repeats(node, name, elements)
            value = node[name]
            items = value
        notes = node.get(f"_{name}")
        # The JSON values that are there (not null), with the XML elements that have a value, in order.
        present = [(index, item) for index, item in enumerate(items) if item is not None]
        valued = [child for child in elements if child.get("value") is not None]
        for (index, item), child in zip(present, valued, strict=False):
            if isinstance(item, str):
                visit(
                    value if isinstance(value, list) else node, index if isinstance(value, list) else name, item, child
                )
        # An extension on a primitive (``_birthDate``) holds values of its own, dates among them.
        if isinstance(notes, dict) and len(elements) == 1:
            _align(notes, elements[0], visit, reading=reading)
        elif isinstance(notes, list) and len(notes) == len(elements):
            for note, child in zip(notes, elements, strict=True):
                if isinstance(note, dict):
                    _align(note, child, visit, reading=reading)


def _as_posted(container: Any, key: Any, value: str, element: etree._Element) -> None:
    written = element.get("value")
    if written is not None and written != value and _TEMPORAL.match(written):
        container[key] = written


def _as_stored(container: Any, key: Any, value: str, element: etree._Element) -> None:
    if element.get("value") not in (None, value) and _TEMPORAL.match(value):
        element.set("value", value)


def hardened_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def _unparsable(message: str) -> InvalidRequest:
    return InvalidRequest.single(IssueCode.BODY_UNPARSABLE, message, None, "structure")


def _parse(body: bytes) -> etree._ElementTree:
    # The DOCTYPE check comes before parsing, so that no entity declaration is even read.
    head = body[:4096].lstrip()
    if b"<!DOCTYPE" in head.upper() or b"<!ENTITY" in body.upper():
        raise InvalidRequest.single(
            IssueCode.XML_DOCTYPE_FORBIDDEN,
            "XML with a DOCTYPE or ENTITY declaration is refused",
            None,
            "security",
        )
    try:
        root = etree.fromstring(body, hardened_parser())
    except etree.XMLSyntaxError as exc:
        raise _unparsable(f"XML is not well-formed: {exc.msg}") from exc
    tree = root.getroottree()
    if tree.docinfo.doctype:  # type: ignore[union-attr]  # lxml-stubs: docinfo is a DocInfo
        raise InvalidRequest.single(IssueCode.XML_DOCTYPE_FORBIDDEN, "XML with a DOCTYPE is refused", None, "security")
    _check_shape(root)
    return tree


def parse_document(body: bytes) -> etree._ElementTree:
    """Any XML document (a CDA, DESIGN §13) through the same hardened parser and bounds as FHIR XML: no DOCTYPE,
    no entities, no network, bounded depth, elements, repeats and attributes."""
    return _parse(body)


def _check_shape(root: etree._Element) -> None:
    """Bounds on the tree, checked in one walk without recursion before fhir.resources reads it: its XML reading
    recurses once per level (gateway.fhir.limits), keeps a node's attributes and namespaces in lists it searches
    for each one, and checks the whole list of an element's same-named siblings as each is added — cost quadratic
    in attributes, namespaces and repeats (60,000 attributes on one element held the event loop 8.9 s). So depth,
    elements, repeats and attributes are bounded, and a FHIR element carries only the attributes FHIR defines:
    ``value``, ``id``, ``url`` (R4 xml.html; namespace declarations are no attributes in lxml). XHTML attributes
    are the narrative's, counted here and judged by txt-1 in validation."""
    if len(root.nsmap) > MAX_XML_ATTRIBUTES:
        raise _too_large(f"the root element declares more than {MAX_XML_ATTRIBUTES} namespaces", root)
    depth = elements = 0
    for event, element in etree.iterwalk(root, events=("start", "end")):
        if event == "end":
            depth -= 1
            continue
        depth += 1
        elements += 1
        if depth > MAX_XML_DEPTH:
            raise nesting_too_deep(MAX_XML_DEPTH)
        if elements > MAX_XML_ELEMENTS:
            raise _too_large(f"the body has more than {MAX_XML_ELEMENTS} XML elements", None)
        attributes = element.attrib
        if len(attributes) + len(element.nsmap) > MAX_XML_ATTRIBUTES:
            raise _too_large(f"an element has more than {MAX_XML_ATTRIBUTES} attributes and namespaces", element)
        if str(element.tag).startswith(_FHIR_TAG):
            unknown = next((name for name in attributes if name not in FHIR_ATTRIBUTES), None)
            if unknown is not None:
                shown = etree.QName(unknown).localname if unknown.startswith("{") else unknown
                raise InvalidResource.single(
                    IssueCode.XML_ATTRIBUTE_UNKNOWN,
                    f"attribute {shown!r} is not FHIR's: a FHIR element carries value, id or url only",
                    _fhirpath_of(element),
                    "structure",
                )
        if len(element) > MAX_XML_REPEATS:
            tag, count = Counter(child.tag for child in element).most_common(1)[0]
            if tag == _ENTRY_TAG and count > MAX_BUNDLE_ENTRIES:
                raise PayloadTooLarge.single(
                    IssueCode.BUNDLE_TOO_MANY_ENTRIES,
                    f"a Bundle may hold at most {MAX_BUNDLE_ENTRIES} entries; this one has {count}",
                    f"{_fhirpath_of(element)}.entry",
                    "too-long",
                )
            if count > MAX_XML_REPEATS:
                raise _too_large(f"more than {MAX_XML_REPEATS} <{etree.QName(tag).localname}> side by side", element)


def _too_large(message: str, element: etree._Element | None) -> PayloadTooLarge:
    return PayloadTooLarge.single(
        IssueCode.XML_TOO_LARGE, message, _fhirpath_of(element) if element is not None else None, "too-long"
    )


def _fhirpath_of(element: etree._Element) -> str:
    """FHIRPath of an XML element. XML does not say which elements repeat, so an index is written where
    same-named siblings make it necessary; the type wrapper inside ``<resource>``/``<contained>`` is no step."""
    steps: list[str] = []
    node: etree._Element | None = element
    while node is not None:
        parent = node.getparent()
        name = etree.QName(node).localname
        if parent is None:
            steps.append(name)
        elif etree.QName(parent).localname in ("resource", "contained") and parent.getparent() is not None:
            pass  # <resource><Patient>: "Patient" names the type, the path goes on from <resource>
        else:
            same = [sibling for sibling in parent if sibling.tag == node.tag]
            steps.append(f"{name}[{same.index(node)}]" if len(same) > 1 else name)
        node = parent
    return ".".join(reversed(steps))


def xml_to_resource(body: bytes) -> Resource:
    tree = _parse(body)
    root = tree.getroot()
    qname = etree.QName(root)
    if qname.namespace != FHIR_NAMESPACE:
        raise InvalidRequest.single(
            IssueCode.XML_NAMESPACE_INVALID,
            f"root element <{qname.localname}> is not in the FHIR namespace {FHIR_NAMESPACE}",
            None,
            "structure",
        )
    for element in root.iter(etree.Element):
        namespace = etree.QName(element).namespace
        if namespace not in (FHIR_NAMESPACE, _XHTML_NAMESPACE):
            raise InvalidRequest.single(
                IssueCode.XML_NAMESPACE_INVALID,
                f"element <{etree.QName(element).localname}> is in namespace {namespace!r}, not FHIR's",
                _fhirpath_of(element),
                "structure",
            )
        if (
            namespace == FHIR_NAMESPACE
            and element.getparent() is not None
            and (etree.QName(element.getparent()).localname in ("resource", "contained"))
            and model_class(etree.QName(element).localname) is None
        ):
            raise InvalidRequest.single(
                IssueCode.RESOURCE_TYPE_UNKNOWN,
                f"<{etree.QName(element).localname}> is not a FHIR R4 resource type",
                _fhirpath_of(element),
            )
    cls = model_class(qname.localname)
    if cls is None:
        raise InvalidRequest.single(
            IssueCode.RESOURCE_TYPE_UNKNOWN, f"<{qname.localname}> is not a FHIR R4 resource type", "$this"
        )
    try:
        model = cls.model_validate_xml(body, xmlparser=hardened_parser())
    except ValidationError as exc:
        raise InvalidResource(*issues_from_validation_error(exc, qname.localname)) from exc
    except KeyError as exc:
        # fhir.resources raises KeyError(name) on an element its model does not have.
        name = str(exc.args[0]) if exc.args else "?"
        unknown: etree._Element | None = next(
            (e for e in root.iter(etree.Element) if etree.QName(e).localname == name), None
        )
        expression = _fhirpath_of(unknown) if unknown is not None else qname.localname
        raise InvalidResource(
            Issue(
                IssueCode.ELEMENT_UNKNOWN,
                f"Unknown element <{name}> at {expression}",
                expression,
                "structure",
            )
        ) from exc
    except (ValueError, TypeError) as exc:
        raise _unparsable(f"XML could not be read as FHIR: {exc}") from exc
    resource: Resource = orjson.loads(model.model_dump_json())
    _align(resource, root, _as_posted, reading=True)  # dates as written, not as fhir.resources re-wrote them
    check_limits(resource)  # string lengths, and the entries of Bundles nested in this one
    return resource


def resource_to_xml(resource: Resource, *, pretty: bool = False) -> bytes:
    cls = model_class(str(resource.get("resourceType")))
    if cls is None:  # pragma: no cover - we only ever render resources we built or stored
        raise ValueError(f"cannot render {resource.get('resourceType')!r} as XML")
    rendered: Any = cls.model_validate(resource).model_dump_xml()  # bytes, though annotated str
    root = etree.fromstring(rendered if isinstance(rendered, bytes) else str(rendered).encode(), hardened_parser())
    _align(resource, root, _as_stored)  # dates as stored (and as the JSON says them), not as datetimes print
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=pretty))
