"""A narrative's XHTML checked as R4 says (narrative.html; Narrative.div's invariants ``txt-1`` and ``txt-2``,
whose FHIRPath ``htmlChecks()`` fhirpathpy does not implement, so their XPath is followed here):

- ``txt-1``: the root is a ``<div>`` in the XHTML namespace, and it holds only the basic formatting elements and
  attributes R4 lists — no ``<script>``, ``<style>``, ``<head>``/``<body>``, forms, frames or objects, no event
  attributes (``onerror``, ``onclick``…). The gateway also refuses a ``javascript:`` or ``vbscript:`` URL in
  ``href`` or ``src``: R4 allows ``<a>`` and ``<img>``, not the script they would carry to a platform's screen.
- ``txt-2``: some non-whitespace text, or an image with a source.

A narrative is passed on to platforms that show it: what it may carry is a list of what is allowed, not of what is
known to be harmful.
"""

from __future__ import annotations

import re

from lxml import etree

from gateway.fhir.xml import hardened_parser

XHTML_NAMESPACE = "http://www.w3.org/1999/xhtml"
_XML_NAMESPACE = "http://www.w3.org/XML/1998/namespace"

#: txt-1's XPath (R4 Narrative.div): the elements…
ELEMENTS = frozenset(
    [
        "a",
        "abbr",
        "acronym",
        "b",
        "big",
        "blockquote",
        "br",
        "caption",
        "cite",
        "code",
        "col",
        "colgroup",
        "dd",
        "dfn",
        "div",
        "dl",
        "dt",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "li",
        "ol",
        "p",
        "pre",
        "q",
        "samp",
        "small",
        "span",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "tt",
        "ul",
        "var",
    ]
)
#: … and the attributes it allows (``xml:lang`` too: FHIR's own XHTML schema declares it).
ATTRIBUTES = frozenset(
    [
        "abbr",
        "accesskey",
        "align",
        "alt",
        "axis",
        "bgcolor",
        "border",
        "cellhalign",
        "cellpadding",
        "cellspacing",
        "cellvalign",
        "char",
        "charoff",
        "charset",
        "cite",
        "class",
        "colspan",
        "compact",
        "coords",
        "dir",
        "frame",
        "headers",
        "height",
        "href",
        "hreflang",
        "hspace",
        "id",
        "lang",
        "longdesc",
        "name",
        "nowrap",
        "rel",
        "rev",
        "rowspan",
        "rules",
        "scope",
        "shape",
        "span",
        "src",
        "start",
        "style",
        "summary",
        "tabindex",
        "title",
        "type",
        "valign",
        "value",
        "vspace",
        "width",
    ]
) | {f"{{{_XML_NAMESPACE}}}lang"}
_SCRIPT_URL = re.compile(r"^\s*(javascript|vbscript)\s*:", re.IGNORECASE)


def narrative_problems(div: str) -> list[tuple[str, str]]:
    """(invariant key, what is wrong) for each invariant ``div`` fails; the first problem of each, not all."""
    if "<!DOCTYPE" in div.upper() or "<!ENTITY" in div.upper():
        return [("txt-1", "a narrative holds no DOCTYPE or ENTITY declaration")]
    try:
        root = etree.fromstring(div.encode(), hardened_parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        return [("txt-1", f"the narrative is not well-formed XHTML ({exc})")]
    problems: list[tuple[str, str]] = []
    if root.tag != f"{{{XHTML_NAMESPACE}}}div":
        problems.append(("txt-1", "the narrative's root is a <div> in the XHTML namespace"))
    else:
        problem = _first_forbidden(root)
        if problem is not None:
            problems.append(("txt-1", problem))
    has_text = any(text.strip() for text in root.itertext())
    if not has_text and not any(image.get("src") for image in root.iter(f"{{{XHTML_NAMESPACE}}}img")):
        problems.append(("txt-2", "the narrative has no non-whitespace content (nor an image with a src)"))
    return problems


def _first_forbidden(root: etree._Element) -> str | None:
    for element in root.iter(etree.Element):  # comments and processing instructions: removed by the parser
        qname = etree.QName(element)
        if qname.namespace != XHTML_NAMESPACE or qname.localname not in ELEMENTS:
            return f"<{qname.localname}> is not among the XHTML elements a narrative may hold (R4 narrative.html)"
        for raw_name, raw_value in element.attrib.items():
            name, value = str(raw_name), str(raw_value)
            if name not in ATTRIBUTES:
                shown = etree.QName(name).localname if name.startswith("{") else name
                return (
                    f"attribute {shown!r} on <{qname.localname}> is not among the XHTML attributes a narrative may "
                    "hold (R4 narrative.html: no event attributes)"
                )
            if name in ("href", "src") and _SCRIPT_URL.match(value):
                return f"<{qname.localname} {name}> holds a script URL"
    return None
