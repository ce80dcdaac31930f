"""Label and field selectors, as written in ``?labelSelector=`` / ``?fieldSelector=``.

Also evaluates the structured ``LabelSelector`` of workloads (matchLabels +
matchExpressions) and node selector requirements, so controllers and the scheduler
share one implementation.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from .errors import bad_request
from .resources import Resource

Requirement = tuple[str, str, tuple[str, ...]]  # (key, operator, values)

_SET_TERM = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^()]*)\)\s*$")
_KEY = re.compile(r"^([a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside a ``(...)`` value set."""
    terms, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return [t.strip() for t in terms if t.strip()]


def _check_key(key: str, term: str) -> str:
    if not _KEY.match(key):
        raise bad_request(f"unable to parse requirement: invalid label key {key!r} in {term!r}")
    return key


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse ``a=b,c!=d,e in (f,g),!h,i``; a malformed selector is a 400 like the real server's."""
    if not text:
        return []
    requirements: list[Requirement] = []
    for term in _split_terms(text):
        set_match = _SET_TERM.match(term)
        if set_match:
            key, op, values = set_match.groups()
            vals = tuple(v.strip() for v in values.split(",") if v.strip())
            requirements.append((_check_key(key, term), op, vals))
        elif term.startswith("!"):
            requirements.append((_check_key(term[1:].strip(), term), "!", ()))
        elif "!=" in term:
            key, value = term.split("!=", 1)
            requirements.append((_check_key(key.strip(), term), "!=", (value.strip(),)))
        elif "==" in term:
            key, value = term.split("==", 1)
            requirements.append((_check_key(key.strip(), term), "=", (value.strip(),)))
        elif "=" in term:
            key, value = term.split("=", 1)
            requirements.append((_check_key(key.strip(), term), "=", (value.strip(),)))
        else:
            requirements.append((_check_key(term, term), "exists", ()))
    return requirements


def labels_match(requirements: list[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in requirements:
        present = key in labels
        value = labels.get(key)
        if op == "=" and value != values[0]:
            return False
        if op == "!=" and value == values[0]:
            return False
        if op == "in" and value not in values:
            return False
        if op == "notin" and present and value in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
    return True


def label_selector_matches(selector: dict[str, Any] | None, labels: dict[str, str] | None) -> bool:
    """Evaluate a structured LabelSelector; an empty selector matches everything."""
    if not selector:
        return True
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def node_requirement_matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    """One nodeSelectorTerm matchExpression: In/NotIn/Exists/DoesNotExist/Gt/Lt."""
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    value = labels.get(key)
    if op == "In":
        return value in values
    if op == "NotIn":
        return value not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt"):
        try:
            actual, bound = int(value), int(values[0])  # type: ignore[arg-type]
        except (TypeError, ValueError, IndexError):
            return False
        return actual > bound if op == "Gt" else actual < bound
    return False


def node_term_matches(term: dict[str, Any], labels: dict[str, str], name: str) -> bool:
    """A nodeSelectorTerm: all its expressions and fields must hold; an empty term matches nothing."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    if not all(node_requirement_matches(e, labels) for e in expressions):
        return False
    return all(node_requirement_matches(f, {"metadata.name": name}) for f in fields)


FieldRequirement = tuple[str, bool, str]  # (field, equal?, value)


def parse_field_selector(text: str | None, res: Resource) -> list[FieldRequirement]:
    if not text:
        return []
    requirements: list[FieldRequirement] = []
    for term in _split_terms(text):
        if "!=" in term:
            field, value = term.split("!=", 1)
            equal = False
        elif "==" in term:
            field, value = term.split("==", 1)
            equal = True
        elif "=" in term:
            field, value = term.split("=", 1)
            equal = True
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        field = field.strip()
        if field not in res.field_selectors:
            raise bad_request(f'field label not supported: {field}')
        requirements.append((field, equal, value.strip()))
    return requirements


def field_value(obj: dict[str, Any], field: str) -> str:
    """The string a field selector compares against (``""`` when the field is unset)."""
    if field == "source":
        return (obj.get("source") or {}).get("component", "")
    current: Any = obj
    for part in field.split("."):
        if not isinstance(current, dict):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def fields_match(requirements: list[FieldRequirement], obj: dict[str, Any]) -> bool:
    return all((field_value(obj, f) == v) == equal for f, equal, v in requirements)


def make_filter(
    res: Resource, label_selector: str | None, field_selector: str | None
) -> Callable[[dict[str, Any]], bool]:
    """Compile both selectors once into a predicate over objects."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector, res)

    def matches(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        return labels_match(labels, meta.get("labels")) and fields_match(fields, obj)

    return matches
