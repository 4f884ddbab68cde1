"""A checker of the DICOM audit message schema (PS3.15 A.5.1, RELAX NG compact), written out
element by element: lxml is not installed here and validates only RELAX NG's XML syntax, so
each rule of the schema (required and optional elements in their order, required and optional
attributes, the enumerated values, the base64 and dateTime types) is checked explicitly."""

from __future__ import annotations

import base64
import re
from xml.etree import ElementTree as ET

DATETIME = re.compile(r"^-?\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")
OUTCOMES = {"0", "4", "8", "12"}
ACTIONS = {"C", "R", "U", "D", "E"}


class SchemaError(AssertionError):
    pass


def _attrs(el: ET.Element, required: set[str], optional: set[str]) -> None:
    missing = required - set(el.attrib)
    if missing:
        raise SchemaError(f"{el.tag}: missing attribute(s) {sorted(missing)}")
    extra = set(el.attrib) - required - optional
    if extra:
        raise SchemaError(f"{el.tag}: attribute(s) not in the schema {sorted(extra)}")
    for name, value in el.attrib.items():
        if name != "UserID" and name != "AlternativeUserID" and name != "UserName" \
                and value != " ".join(value.split()):
            raise SchemaError(f"{el.tag}@{name}: not a token: {value!r}")


def _coded(el: ET.Element) -> None:
    """CodedValueType: csd-code, codeSystemName and originalText required, displayName
    optional; no content."""
    _attrs(el, {"csd-code", "codeSystemName", "originalText"}, {"displayName"})
    if len(el) or (el.text or "").strip():
        raise SchemaError(f"{el.tag}: a coded value has no content")


def _sequence(el: ET.Element, pattern: list[tuple[str, str]]) -> dict[str, list[ET.Element]]:
    """Children in the schema's order; each (tag, occurrence) with occurrence one of
    '1', '?', '*', '+'; returns the children by tag."""
    children = list(el)
    found: dict[str, list[ET.Element]] = {}
    i = 0
    for tag, occ in pattern:
        group = []
        while i < len(children) and children[i].tag == tag:
            group.append(children[i])
            i += 1
            if occ in ("1", "?"):
                break
        if occ in ("1", "+") and not group:
            raise SchemaError(f"{el.tag}: missing element {tag}")
        found[tag] = group
    if i < len(children):
        raise SchemaError(f"{el.tag}: unexpected element {children[i].tag} (position {i})")
    return found


def validate(xml: bytes) -> ET.Element:
    """The parsed AuditMessage; raises SchemaError at the first rule it breaks."""
    root = ET.fromstring(xml)
    if root.tag != "AuditMessage":
        raise SchemaError(f"root is {root.tag}, not AuditMessage")
    _attrs(root, set(), set())
    parts = _sequence(root, [("EventIdentification", "1"), ("ActiveParticipant", "+"),
                             ("AuditSourceIdentification", "1"),
                             ("ParticipantObjectIdentification", "*")])
    ev = parts["EventIdentification"][0]
    _attrs(ev, {"EventDateTime", "EventOutcomeIndicator"}, {"EventActionCode"})
    if not DATETIME.match(ev.attrib["EventDateTime"]):
        raise SchemaError(f"EventDateTime not an xsd:dateTime: {ev.attrib['EventDateTime']}")
    if ev.attrib["EventOutcomeIndicator"] not in OUTCOMES:
        raise SchemaError("EventOutcomeIndicator not 0, 4, 8 or 12")
    if ev.attrib.get("EventActionCode", "E") not in ACTIONS:
        raise SchemaError("EventActionCode not C, R, U, D or E")
    evp = _sequence(ev, [("EventID", "1"), ("EventTypeCode", "*"),
                         ("EventOutcomeDescription", "?")])
    for code in evp["EventID"] + evp["EventTypeCode"]:
        _coded(code)
    for ap in parts["ActiveParticipant"]:
        _attrs(ap, {"UserID", "UserIsRequestor"}, {"AlternativeUserID", "UserName",
                                                   "NetworkAccessPointID",
                                                   "NetworkAccessPointTypeCode"})
        if ap.attrib["UserIsRequestor"] not in ("true", "false", "1", "0"):
            raise SchemaError("UserIsRequestor not an xsd:boolean")
        if ap.attrib.get("NetworkAccessPointTypeCode", "1") not in {"1", "2", "3", "4", "5"}:
            raise SchemaError("NetworkAccessPointTypeCode not 1..5")
        app = _sequence(ap, [("RoleIDCode", "*"), ("MediaIdentifier", "?")])
        for code in app["RoleIDCode"]:
            _coded(code)
    src = parts["AuditSourceIdentification"][0]
    _attrs(src, {"AuditSourceID"}, {"AuditEnterpriseSiteID"})
    for code in _sequence(src, [("AuditSourceTypeCode", "*")])["AuditSourceTypeCode"]:
        if set(code.attrib) == {"csd-code"}:
            if code.attrib["csd-code"] not in {str(i) for i in range(1, 10)}:
                raise SchemaError("AuditSourceTypeCode: a bare code must be 1..9")
        else:
            _coded(code)
    for po in parts["ParticipantObjectIdentification"]:
        _attrs(po, {"ParticipantObjectID"}, {"ParticipantObjectTypeCode",
                                             "ParticipantObjectTypeCodeRole",
                                             "ParticipantObjectDataLifeCycle",
                                             "ParticipantObjectSensitivity"})
        if po.attrib.get("ParticipantObjectTypeCode", "1") not in {"1", "2", "3", "4"}:
            raise SchemaError("ParticipantObjectTypeCode not 1..4")
        if po.attrib.get("ParticipantObjectTypeCodeRole", "1") not in \
                {str(i) for i in range(1, 27)}:
            raise SchemaError("ParticipantObjectTypeCodeRole not 1..26")
        if po.attrib.get("ParticipantObjectDataLifeCycle", "1") not in \
                {str(i) for i in range(1, 16)}:
            raise SchemaError("ParticipantObjectDataLifeCycle not 1..15")
        names = [c.tag for c in po]
        choice = "ParticipantObjectQuery" if "ParticipantObjectQuery" in names \
            else "ParticipantObjectName"
        pop = _sequence(po, [("ParticipantObjectIDTypeCode", "1"), (choice, "1"),
                             ("ParticipantObjectDetail", "*"),
                             ("ParticipantObjectDescription", "*")])
        _coded(pop["ParticipantObjectIDTypeCode"][0])
        if choice == "ParticipantObjectQuery":
            base64.b64decode(pop[choice][0].text or "", validate=True)
        for detail in pop["ParticipantObjectDetail"]:
            _attrs(detail, {"type", "value"}, set())
            base64.b64decode(detail.attrib["value"], validate=True)
    return root
