"""Reading Workspace YAML into the model, with a file:line:column for every problem.

Why not ``yaml.safe_load``: it forgets where each value came from, expands
aliases without limit (a "billion laughs" file exhausts memory), silently keeps
the last of two duplicate keys, and turns dates into ``datetime`` objects. Here
the node tree is composed with PyYAML's marks kept, then turned into plain data
by hand: positions are recorded per field path, aliases are expanded under a
node budget, nesting is capped, duplicate keys are errors.

Nothing in this module raises for bad content: every problem becomes a
:class:`Finding`, and all findings of a file are reported together.
"""

from __future__ import annotations

import codecs
import difflib
import re
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Optional, Union

from kaitoctl.workspace import API_VERSION, API_VERSIONS, KIND, Workspace

STDIN = "-"
STDIN_NAME = "<stdin>"

# Limits that keep hostile input cheap. A real Workspace is a few hundred bytes,
# a few dozen nodes and six levels deep; these are orders of magnitude above.
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_NODES = 100_000          # per document, counting every alias expansion
MAX_DEPTH = 64               # mapping/sequence nesting
MAX_DOCUMENTS = 1_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

PathPart = Union[str, int]
Path = tuple[PathPart, ...]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_YAML_TAG = "tag:yaml.org,2002:"


def format_path(path: Iterable[PathPart]) -> str:
    """``("inference", "adapters", 1, "strength")`` → ``inference.adapters[1].strength``.

    Keys that are not identifiers (label keys such as ``kaito.sh/workspace``)
    are quoted in brackets so that the path stays unambiguous; huge keys are shortened.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.fullmatch(part) and len(part) <= 60:
            out += f".{part}" if out else part
        else:
            out += "[" + show_value(part) + "]"
    return out


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def show_value(value: Any, limit: int = 60, *, quote: bool = True) -> str:
    """A value as it would appear in YAML, shortened so that huge input never floods the terminal.

    ``quote=False`` shows strings bare (for KAITO's message texts, which do not quote names).
    """
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = _quote(value) if quote else value
    elif isinstance(value, dict):
        text = "a mapping"
    elif isinstance(value, list):
        text = "a list"
    else:
        text = str(value)
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"
                   for ch in text[: limit * 2])
    if len(text) > limit:
        text = text[: limit - 3] + "..."
        if isinstance(value, str):
            text += f" ({len(value)} characters)"
    return text


@dataclass
class Finding:
    """One problem in a Workspace file: where it is, and what to do about it."""

    # "note": a remark that never fails a command, not even with --strict (KAITO portability);
    # shown by `kaitoctl validate` only, so that apply and adapters update stay quiet.
    severity: Literal["error", "warning", "note"]
    path: str             # field path, e.g. "inference.adapters[1].strength" ("" for the document)
    message: str          # what is wrong and how to fix it
    file: str             # as given on the command line ("-" → "<stdin>")
    line: Optional[int]   # 1-based
    column: Optional[int]  # 1-based

    def format(self) -> str:
        """``ws.yaml:12:7: inference.adapters[1].strength: <message>`` (warnings say so)."""
        where = self.file or "<workspace>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        kind = "" if self.severity == "error" else f"{self.severity}: "
        field_path = f"{self.path}: " if self.path else ""
        return f"{where}: {kind}{field_path}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``-o json|yaml``."""
        return {
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
        }


@dataclass
class LoadedDocument:
    """One ``---`` document of a file, parsed as far as it could be.

    ``data`` is the plain data as written (before defaults), which validation
    consults for things the model normalises away (was strength a number? was
    instanceType omitted?). ``positions`` maps field paths to the (line,
    column) of their value, ``key_positions`` to the (line, column) of their key.

    ``workspace`` is set only when the document has no error at all. ``draft``
    is the Workspace as far as it could be read, so that the rules can still
    run and report every problem of the file at once: the document itself when
    the schema accepts it, else the document without the values the schema
    rejected (already reported); ``dropped`` lists those paths, where
    validation keeps quiet.
    """

    file: str
    index: int
    workspace: Optional[Workspace]
    findings: list[Finding] = field(default_factory=list)
    data: Any = None
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict, repr=False)
    key_positions: dict[Path, tuple[int, int]] = field(default_factory=dict, repr=False)
    start: Optional[tuple[int, int]] = None
    draft: Optional[Workspace] = None
    dropped: frozenset[Path] = frozenset()
    # A ConfigMap or Secret next to the Workspaces (kubectl's multi-document files): the object
    # as written, once its own checks passed (kaitoctl.companions).
    companion: Optional[dict[str, Any]] = None

    def locate(self, path: Path, *, key: bool = False) -> tuple[Optional[int], Optional[int]]:
        """The position of ``path``, else of its nearest ancestor that was written, else the document start."""
        if key and path in self.key_positions:
            return self.key_positions[path]
        probe = tuple(path)
        while probe:
            if probe in self.positions:
                return self.positions[probe]
            probe = probe[:-1]
        if () in self.positions:
            return self.positions[()]
        return self.start if self.start else (None, None)

    def finding(self, severity: Literal["error", "warning", "note"], path: Path, message: str, *, key: bool = False) -> Finding:
        """A finding at ``path`` of this document, positioned from the YAML."""
        line, column = self.locate(path, key=key)
        return Finding(severity, format_path(path), message, self.file, line, column)

    @property
    def ok(self) -> bool:
        """True when the document parsed into a Workspace without errors."""
        return self.workspace is not None and not any(f.severity == "error" for f in self.findings)


# --------------------------------------------------------------------------------------------------
# Reading bytes


def display_name(path: str) -> str:
    """How a file is named in findings: as given, with ``-`` shown as ``<stdin>``."""
    return STDIN_NAME if path == STDIN else path


def load_file(path: str) -> list[LoadedDocument]:
    """Load every document of ``path`` (``-`` reads stdin). Never raises for bad content.

    An unreadable or empty file gives one document without a workspace and a
    finding that says why.
    """
    name = display_name(path)
    try:
        if path == STDIN:
            raw = _read_limited(sys.stdin.buffer)
        else:
            with open(path, "rb") as handle:
                raw = _read_limited(handle)
    except IsADirectoryError:
        return [_broken(name, "is a directory: give a Workspace YAML file (or - for stdin)")]
    except FileNotFoundError:
        return [_broken(name, "no such file")]
    except PermissionError:
        return [_broken(name, "permission denied: cannot read the file")]
    except _TooLarge:
        return [_broken(name, f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: "
                              "a Workspace is a small YAML file; is this the right file?")]
    except OSError as err:
        return [_broken(name, f"cannot read the file: {err.strerror or err}")]
    return load_bytes(raw, name)


class _TooLarge(Exception):
    pass


def _read_limited(handle: Any) -> bytes:
    data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _TooLarge()
    return data


def _broken(name: str, message: str, line: Optional[int] = None, column: Optional[int] = None,
            index: int = 0) -> LoadedDocument:
    return LoadedDocument(name, index, None, [Finding("error", "", message, name, line, column)])


def _decode(raw: bytes, name: str) -> tuple[Optional[str], Optional[LoadedDocument]]:
    """Bytes → text. UTF-8 (with or without BOM) and UTF-16/32 with a BOM, as YAML allows."""
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                          (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):
            try:
                return raw.decode(encoding), None
            except UnicodeDecodeError:
                return None, _broken(name, f"the file starts with a {encoding.upper()} byte-order mark but is "
                                           f"not valid {encoding.upper()}: save it as UTF-8")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as err:
        before = raw[: err.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        byte = raw[err.start]
        return None, _broken(
            name,
            f"the file is not valid UTF-8 (byte 0x{byte:02x} at line {line}, column {column}): "
            "is it a binary file? Workspace YAML must be saved as UTF-8",
            line, column,
        )


def load_bytes(raw: bytes, name: str) -> list[LoadedDocument]:
    """Load every document of ``raw`` (the content of file ``name``)."""
    text, broken = _decode(raw, name)
    if broken is not None:
        return [broken]
    assert text is not None
    return load_text(text, name)


def load_text(text: str, name: str = STDIN_NAME) -> list[LoadedDocument]:
    """Load every document of YAML ``text``; ``name`` is used in findings."""
    import yaml

    if "\x00" in text:
        offset = text.index("\x00")
        line, column = _line_col(text, offset)
        return [_broken(name, f"the file contains a NUL byte at line {line}, column {column}: is it a binary "
                              "file? A Workspace is a YAML text file", line, column)]
    documents: list[LoadedDocument] = []
    index = 0
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        while loader.check_node():
            node = loader.get_node()
            if index >= MAX_DOCUMENTS:
                documents.append(_broken(name, f"more than {MAX_DOCUMENTS} documents in one file", index=index))
                break
            doc = _document_from_node(node, name, index, loader)
            if doc is not None:
                documents.append(doc)
            index += 1
    except yaml.YAMLError as err:
        documents.append(_yaml_error(err, name, index, text))
    except RecursionError:
        documents.append(_broken(name, f"the YAML is nested too deeply to read (more than {MAX_DEPTH} levels are "
                                       "never needed in a Workspace)", index=index))
    finally:
        if loader is not None:
            loader.dispose()
    if not documents:
        return [_broken(name, "the file holds no Workspace (it is empty or has only comments): expected a document "
                              f"with apiVersion: {API_VERSION} and kind: {KIND}")]
    return documents


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _yaml_error(err: Exception, name: str, index: int, text: str) -> LoadedDocument:
    """A PyYAML error as a finding, in words a user can act on."""
    import yaml

    if isinstance(err, yaml.reader.ReaderError):
        line, column = _line_col(text, max(err.position, 0)) if isinstance(err.position, int) else (None, None)
        char = err.character
        code = f"U+{ord(char) if isinstance(char, str) else char:04X}"
        return _broken(name, f"the file contains a control character ({code}) that YAML does not allow: is it a "
                             "binary file? A Workspace is a YAML text file", line, column, index)
    problem = getattr(err, "problem", None) or str(err)
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    message = f"invalid YAML: {problem}"
    context = getattr(err, "context", None)
    context_mark = getattr(err, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        message += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    elif context:
        message += f" ({context})"
    if "'\\t'" in problem or "\t" in problem:
        message += ": YAML indentation must use spaces, not tabs"
    elif "mapping values are not allowed" in problem:
        message += ": check the indentation, or quote a value that contains ': '"
    elif "found undefined alias" in problem:
        message += ": every *alias needs an &anchor earlier in the same document"
    return _broken(name, message, line, column, index)


# --------------------------------------------------------------------------------------------------
# Node tree → plain data, with positions


class _Abort(Exception):
    """Stop converting a document: a limit was hit (the finding is already recorded)."""


class _Converter:
    """Turn one composed YAML node tree into plain data, recording positions and problems."""

    def __init__(self, name: str, loader: Any) -> None:
        self.name = name
        self.loader = loader  # its SafeConstructor turns scalars into values
        self.nodes = 0
        self.positions: dict[Path, tuple[int, int]] = {}
        self.key_positions: dict[Path, tuple[int, int]] = {}
        self.findings: list[Finding] = []

    def error(self, node: Any, path: Path, message: str, *, at_key: bool = False) -> None:
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if at_key and path in self.key_positions:
            # An alias's node sits where its anchor was written: point at the key that led here instead.
            line, column = self.key_positions[path]
        self.findings.append(Finding("error", format_path(path), message, self.name, line, column))

    def convert(self, node: Any, path: Path, depth: int, active: frozenset[int]) -> Any:
        import yaml

        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.error(node, path[:1], f"the document expands to more than {MAX_NODES} YAML nodes (through aliases, "
                                       "a 'billion laughs' file does this): a Workspace needs a few dozen; remove "
                                       "the anchors and aliases", at_key=True)
            raise _Abort()
        if depth > MAX_DEPTH:
            self.error(node, path[:1], f"nested more than {MAX_DEPTH} levels deep: a Workspace never needs that",
                       at_key=True)
            raise _Abort()
        if id(node) in active:
            self.error(node, path, "an alias refers to a node that contains it (a recursive YAML structure): "
                                   "a Workspace cannot be infinite")
            raise _Abort()
        self.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth, active | {id(node)})
        if isinstance(node, yaml.SequenceNode):
            if node.tag not in (_YAML_TAG + "seq",):
                self.error(node, path, f"unsupported YAML tag {node.tag!r}: use a plain list")
            return [self.convert(child, path + (i,), depth + 1, active | {id(node)})
                    for i, child in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: Any, path: Path) -> Any:
        tag = node.tag
        if tag == _YAML_TAG + "timestamp":
            # JSON, and so Kubernetes, has no timestamp type: a date is its text.
            return node.value
        if tag in {_YAML_TAG + t for t in ("str", "int", "float", "bool", "null")}:
            try:
                value = self.loader.construct_object(node, deep=True)
            except Exception:  # noqa: BLE001 - PyYAML raises assorted types for odd scalars
                if tag != _YAML_TAG + "int":
                    self.error(node, path, f"cannot read the value {show_value(node.value)} as "
                                           f"{tag[len(_YAML_TAG):]}")
                    return node.value
                value = None  # too many digits for Python to even parse: out of range, below
            if tag == _YAML_TAG + "int" and not (isinstance(value, int) and INT64_MIN <= value <= INT64_MAX):
                # Kubernetes numbers are 64-bit; a bigger one is a mistake (and too long to even print).
                self.error(node, path, f"the integer {show_value(node.value)} is out of range: Kubernetes integers "
                                       "are 64-bit")
                return None
            return value
        self.error(node, path, f"unsupported YAML tag {tag!r}: Workspace values are plain strings, numbers, "
                               "booleans, lists and mappings")
        return node.value

    def _mapping(self, node: Any, path: Path, depth: int, active: frozenset[int]) -> dict[str, Any]:
        import yaml

        if node.tag != _YAML_TAG + "map":
            self.error(node, path, f"unsupported YAML tag {node.tag!r}: use a plain mapping")
        out: dict[str, Any] = {}
        written: set[str] = set()
        merged: list[tuple[Any, Any]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _YAML_TAG + "merge":
                # `<<: *defaults`: keys written in this mapping win over merged ones.
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        self.error(value_node, path, "a merge key (<<) must refer to a mapping")
                        continue
                    if id(source) in active:
                        self.error(value_node, path, "a merge key (<<) refers to a mapping that contains it")
                        raise _Abort()
                    merged.extend(source.value)
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            child = path + (key,)
            if key in written:
                first = self.key_positions.get(child, (None, None))
                self.error(key_node, child, f"duplicate key {show_value(key)} (first written at line {first[0]}): "
                                            "YAML keeps only one of them; remove the other")
                continue
            written.add(key)
            self.key_positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.convert(value_node, child, depth + 1, active)
        for key_node, value_node in merged:
            key = self._key(key_node, path)
            if key is None or key in out:
                continue
            child = path + (key,)
            self.key_positions.setdefault(child, (key_node.start_mark.line + 1, key_node.start_mark.column + 1))
            out[key] = self.convert(value_node, child, depth + 1, active)
        return out

    def _key(self, key_node: Any, path: Path) -> Optional[str]:
        import yaml

        if not isinstance(key_node, yaml.ScalarNode):
            self.error(key_node, path, "a mapping key must be a plain string, not a list or mapping")
            return None
        value = self._scalar(key_node, path)
        if isinstance(value, str):
            return value
        self.error(key_node, path, f"the key {show_value(key_node.value)} is read as {_describe(value)}, not a "
                                   "string: quote it")
        return None


def _document_from_node(node: Any, name: str, index: int, loader: Any) -> Optional[LoadedDocument]:
    """One composed document → a LoadedDocument (None for an empty document between ``---``)."""
    import yaml

    start = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.ScalarNode) and node.tag == _YAML_TAG + "null" and node.value in ("", "~", "null"):
        return None  # an empty document (e.g. a trailing ---), as kubectl ignores it
    converter = _Converter(name, loader)
    try:
        data = converter.convert(node, (), 0, frozenset())
    except _Abort:
        return LoadedDocument(name, index, None, converter.findings, None, converter.positions,
                              converter.key_positions, start)
    doc = LoadedDocument(name, index, None, converter.findings, data, converter.positions,
                         converter.key_positions, start)
    if not isinstance(data, dict):
        what = "a list" if isinstance(data, list) else f"the value {show_value(data)}"
        doc.findings.append(doc.finding("error", (), f"expected a Workspace (a mapping with apiVersion: "
                                                     f"{API_VERSION}, kind: {KIND}, metadata, resource and "
                                                     f"inference), found {what}"))
        return doc
    _build_workspace(doc, data)
    return doc


# --------------------------------------------------------------------------------------------------
# Plain data → Workspace


def _build_workspace(doc: LoadedDocument, data: dict[str, Any]) -> None:
    """Check the object's identity (apiVersion, kind, no spec:), then the schema; fill ``doc``.

    Every schema error is reported from the first attempt; the later attempts
    only build ``doc.draft`` without the rejected values.
    """
    import pydantic

    if not _check_identity(doc, data):
        return
    dropped: set[Path] = set()
    current = data
    for attempt in range(MAX_DRAFT_ATTEMPTS):
        try:
            workspace = Workspace.model_validate(current, strict=True)
        except pydantic.ValidationError as err:
            errors = err.errors(include_url=False)
        except (RecursionError, ValueError, TypeError) as err:  # defensive: odd input the model chokes on
            if attempt == 0:
                doc.findings.append(doc.finding("error", (), f"cannot read the Workspace: {err}"))
            return
        else:
            doc.draft, doc.dropped = workspace, frozenset(dropped)
            if not any(f.severity == "error" for f in doc.findings):
                doc.workspace = workspace
            return
        if attempt == 0:
            already = {f.path for f in doc.findings}  # the YAML problem there was reported; its fallout is noise
            for error in errors:
                finding = _schema_finding(doc, error)
                if finding.path not in already:
                    doc.findings.append(finding)
        remaining = _without_rejected(current, errors, dropped)
        if remaining is None:
            return
        current = remaining


# A rejected value goes in one attempt, a required field's parent in the next: the model is a few
# levels deep, so a handful of attempts always ends.
MAX_DRAFT_ATTEMPTS = 8
_ABSENT = object()


def _at(data: Any, path: Path) -> Any:
    node = data
    for part in path:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return _ABSENT
    return node


def _replaced(data: Any, path: Path, value: Any) -> Any:
    """``data`` with the value at ``path`` replaced (``_ABSENT`` removes it), copying only along ``path``."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        out: Any = dict(data)
        if rest:
            out[head] = _replaced(data[head], rest, value)
        elif value is _ABSENT:
            del out[head]
        else:
            out[head] = value
        return out
    out = list(data)
    out[head] = _replaced(data[head], rest, value) if rest else value
    return out


def _blank(annotation: Any) -> Any:
    """The emptiest value the schema accepts for ``annotation`` (``_ABSENT`` when there is none).

    It stands in for a rejected list entry: "" for a string, a mapping of
    blanks for a model's required fields. Validation never reports on it,
    because its path is in ``dropped``.
    """
    from pydantic import BaseModel

    if annotation is str:
        return ""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        out = {}
        for name, info in annotation.model_fields.items():
            if info.is_required():
                out[name] = _blank(info.annotation)
                if out[name] is _ABSENT:
                    return _ABSENT
        return out
    return _ABSENT


def _without_rejected(data: dict[str, Any], errors: list[Any], dropped: set[Path]) -> Optional[dict[str, Any]]:
    """``data`` without the values pydantic rejected; adds what went to ``dropped``. None when no draft can be made.

    A rejected mapping key is removed. A rejected list entry is replaced by a
    blank (see :func:`_blank`), so that the other entries keep their index,
    their position in the file and their checks; when no blank exists, or the
    blank is rejected too, the whole list goes. A required field that is
    missing (or was removed) takes its parent with it.
    """
    removed: list[Path] = []
    for error in errors:
        path: Path = tuple(error["loc"])
        if any(path[:len(gone)] == gone for gone in removed):
            continue  # inside something this pass already removed
        while path:
            parent, last = _at(data, path[:-1]), path[-1]
            if isinstance(parent, dict) and last in parent:
                data = _replaced(data, path, _ABSENT)
                break
            if isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
                blank = _ABSENT if path in dropped else _blank(_annotation_at(path))
                if blank is not _ABSENT:
                    data = _replaced(data, path, blank)
                    break
            path = path[:-1]
        if not path:
            return None
        removed.append(path)
        dropped.add(path)
    return data if removed else None


_VERSIONS_TEXT = " or ".join(API_VERSIONS)


def _check_identity(doc: LoadedDocument, data: dict[str, Any]) -> bool:
    """apiVersion, kind and the `spec:` mistake. False when the rest would only be noise."""
    from kaitoctl import companions

    proceed = True
    kind = data.get("kind")
    if "kind" not in data:
        doc.findings.append(doc.finding("error", ("kind",), f"kind is missing: add kind: {KIND}"))
    elif kind in companions.KINDS:
        companions.check(doc, data)
        return False
    elif kind != KIND:
        doc.findings.append(doc.finding(
            "error", ("kind",),
            f"expected kind: {KIND}, found {show_value(kind)}: kaitoctl reads only KAITO Workspace objects "
            f"({_VERSIONS_TEXT}) and the ConfigMaps and Secrets next to them; remove other objects from this file"))
        return False
    version = data.get("apiVersion")
    if "apiVersion" not in data:
        doc.findings.append(doc.finding("error", ("apiVersion",),
                                        f"apiVersion is missing: add apiVersion: {API_VERSIONS[-1]}"))
    elif version not in API_VERSIONS:
        if isinstance(version, str) and version.startswith("kaito.sh/"):
            message = (f"apiVersion {show_value(version)} is not supported: kaitoctl reads {_VERSIONS_TEXT} "
                       f"Workspaces; set apiVersion: {API_VERSIONS[-1]}")
        else:
            message = f"expected apiVersion: {_VERSIONS_TEXT}, found {show_value(version)}"
        doc.findings.append(doc.finding("error", ("apiVersion",), message))
        proceed = False
    if "spec" in data:
        doc.findings.append(doc.finding(
            "error", ("spec",),
            "a Workspace has no spec: key: in KAITO's kaito.sh/v1alpha1 and v1beta1 APIs, resource and inference sit "
            "at the top level, next to metadata; move them out of spec: and remove it", key=True))
        proceed = False
    return proceed


_TYPE_WORDS = {
    "string": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean (true or false)",
    "dict": "a mapping",
    "model": "a mapping",
    "list": "a list",
}


def _describe(value: Any) -> str:
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return f"a boolean ({show_value(value)})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({show_value(value)})"
    if isinstance(value, str):
        return f"a string ({show_value(value)})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _schema_finding(doc: LoadedDocument, error: Any) -> Finding:
    """One pydantic error → a finding in the user's words, positioned from the YAML."""
    loc: Path = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        parent, key = loc[:-1], str(loc[-1])
        return doc.finding("error", loc, _unknown_field_message(parent, key), key=True)
    if kind == "missing":
        return doc.finding("error", loc, f"required field {loc[-1]!s} is missing")
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        choices = re.findall(r"'([^']*)'", expected)
        message = f"must be one of {', '.join(choices)}; found {_describe(value)}"
        if isinstance(value, str):
            close = [c for c in choices if c.lower() == value.lower()] or difflib.get_close_matches(value, choices, 1)
            if close:
                message += f" (did you mean {close[0]}?)"
        return doc.finding("error", loc, message)
    for suffix, word in _TYPE_WORDS.items():
        if kind in (f"{suffix}_type", f"{suffix}_parsing", f"{suffix}_from_float", "model_attributes_type"):
            expected = _TYPE_WORDS["model"] if kind == "model_attributes_type" else word
            message = f"expected {expected}, found {_describe(value)}"
            if word == "a string" and isinstance(value, (int, float, bool)):
                message += ": quote it"
            return doc.finding("error", loc, message)
    if kind == "model_type":
        return doc.finding("error", loc, f"expected a mapping, found {_describe(value)}")
    return doc.finding("error", loc, f"{error.get('msg', 'invalid value')} (found {_describe(value)})")


def _annotation_at(path: Path) -> Any:
    """The type the schema expects at ``path`` (None outside the schema, e.g. under an unknown field)."""
    from pydantic import BaseModel

    current: Any = Workspace
    for part in path:
        if isinstance(current, type) and issubclass(current, BaseModel):
            if not isinstance(part, str) or part not in current.model_fields:
                return None
            current = current.model_fields[part].annotation
        current = _unwrap(current, part)
    return current


def _model_at(path: Path) -> Optional[type]:
    """The pydantic model class that describes the mapping at ``path`` (None for schemaless parts)."""
    from pydantic import BaseModel

    current = _annotation_at(path)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any, part: PathPart) -> Any:
    """Optional[X] → X; list[X] → X when indexing with an int."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is Union:
        non_none = [a for a in args if a is not type(None)]
        annotation = non_none[0] if len(non_none) == 1 else annotation
        args = typing.get_args(annotation)
        origin = typing.get_origin(annotation)
    if origin is list and isinstance(part, int) and args:
        return args[0]
    return annotation


def _unknown_field_message(parent: Path, key: str) -> str:
    model = _model_at(parent)
    fields = list(model.model_fields) if model is not None else []
    where = format_path(parent) or "the top level"
    message = f"unknown field {show_value(key)}"
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    if not close:
        close = [f for f in fields if f.lower() == key.lower()]
    if close:
        return f"{message} (did you mean {close[0]}?)"
    if fields:
        return f"{message}: valid fields of {where} are {', '.join(fields)}"
    return message
