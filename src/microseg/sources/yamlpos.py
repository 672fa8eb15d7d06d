"""YAML/JSON loading that can say where every value came from.

Readers report bad input as ``file:line [field]``. Values are loaded on the fast path (``json`` for
JSON files, libyaml for YAML); the table of lines — the line of every mapping key and sequence item
under its path, e.g. ``("spec", "containers", 0, "ports")`` — is built only when a line is first asked
for, by composing the file's YAML node tree (JSON is YAML for this purpose). Lines are needed for
errors and for the few objects that end up in a message, so a clean multi-megabyte
``kubectl get pods -A -o json`` dump never pays for them. A path without an entry of its own (a
missing field, the inside of an aliased node) reports the line of its nearest ancestor.

Duplicate mapping keys are rejected in both formats: YAML forbids them, yet PyYAML and ``json`` both
keep the last one silently, and a second ``selector:`` quietly replacing the first is exactly the
kind of input that must fail closed.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from microseg.errors import InputError

# libyaml is an order of magnitude faster on multi-megabyte dumps; the pure Python loader behaves
# the same and is the fallback when PyYAML was built without it.
try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

PathElem = str | int
NodePath = tuple[PathElem, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _DuplicateKey(Exception):
    """Raised on the fast path; the slow path then finds the key's full path and line."""


class _StrictLoader(_BaseLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                if key_node.value in seen:
                    raise _DuplicateKey(key_node.value)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


class _Lines:
    """Line tables of one file's documents, computed on first use."""

    def __init__(self, text: str, is_json: bool) -> None:
        # JSON cannot hold a raw tab inside a string, so replacing tabs (which YAML refuses as
        # indentation) keeps every string intact and every value on its line.
        self._text = text.replace("\t", " ") if is_json else text
        self._starts: list[int] = []
        self._tables: list[dict[NodePath, int]] | None = None

    def _build(self) -> list[dict[NodePath, int]]:
        if self._tables is None:
            self._tables = []
            try:
                for node in yaml.compose_all(self._text, Loader=_BaseLoader):
                    table: dict[NodePath, int] = {}
                    if node is not None:
                        _walk(node, (), table, set())
                    self._starts.append(node.start_mark.line + 1 if node is not None else 1)
                    self._tables.append(table)
            except yaml.YAMLError:
                pass  # valid JSON that YAML 1.1 cannot compose: values are right, lines fall back
        return self._tables

    def table(self, index: int) -> dict[NodePath, int]:
        tables = self._build()
        return tables[index] if index < len(tables) else {}

    def start(self, index: int) -> int:
        self._build()
        return self._starts[index] if index < len(self._starts) else 1


@dataclass(frozen=True)
class Document:
    """One YAML document (or the single JSON value of a JSON file) that can locate its values."""

    data: object
    file: str
    index: int  # 0-based position of the document in its file
    lines: _Lines = field(repr=False, compare=False)

    @property
    def line(self) -> int:
        """1-based line where the document starts."""
        return self.lines.start(self.index)

    def line_of(self, path: NodePath) -> int:
        """Line of ``path`` or, when it has none (e.g. a missing field), of its nearest ancestor."""
        table = self.lines.table(self.index)
        for end in range(len(path), 0, -1):
            found = table.get(path[:end])
            if found is not None:
                return found
        return self.line

    def error(self, message: str, path: NodePath = ()) -> InputError:
        return InputError(message, file=self.file, line=self.line_of(path), field=format_path(path) or None)


def expect_mapping(doc: Document, value: object, at: NodePath, allowed: set[str]) -> dict[str, object]:
    """``value`` (at ``at`` in ``doc``) as a mapping whose keys are all in ``allowed``; else the error naming it."""
    if not isinstance(value, dict):
        raise doc.error("expected a mapping", at)
    for key in value:
        if key not in allowed:
            raise doc.error(f"unknown field {key!r}", (*at, str(key)))
    return value


def expect_list(doc: Document, value: object, at: NodePath) -> list[object]:
    if not isinstance(value, list):
        raise doc.error("expected a list", at)
    return value


def expect_string(doc: Document, value: object, at: NodePath) -> str:
    if not isinstance(value, str):
        raise doc.error(f"expected a string, not {value!r}", at)
    return value


def format_path(path: NodePath) -> str:
    """``("spec", "ports", 0, "port")`` -> ``spec.ports[0].port``."""
    out = ""
    for elem in path:
        if isinstance(elem, int):
            out += f"[{elem}]"
        else:
            out += f".{elem}" if out else elem
    return out


def read_text(path: Path, display: str) -> str:
    """Decode a file, honouring a byte-order mark: PowerShell's `>` writes UTF-16 with a BOM."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", file=display) from exc
    encoding = "utf-8-sig"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"not valid {encoding} text", file=display, line=line) from exc


def load_documents(path: Path, display: str) -> list[Document]:
    """All documents of a YAML or JSON file. Malformed text raises :class:`InputError` with its line."""
    text = read_text(path, display)
    is_json = path.suffix.lower() == ".json"
    lines = _Lines(text, is_json)
    try:
        values = [_load_json(text, display)] if is_json else _load_yaml(text, display)
    except _DuplicateKey:
        _locate_duplicate(text, display, is_json)  # raises with the key's path and line
        raise InputError("duplicate mapping key", file=display) from None
    return [Document(data=value, file=display, index=i, lines=lines) for i, value in enumerate(values)]


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey()
    return out


def _load_json(text: str, display: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg}", file=display, line=exc.lineno,
                         column=exc.colno) from exc


def _load_yaml(text: str, display: str) -> list[object]:
    try:
        return list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "malformed YAML"
        raise InputError(f"malformed YAML: {problem}", file=display, line=mark.line + 1 if mark else None,
                         column=mark.column + 1 if mark else None) from exc
    except yaml.YAMLError as exc:
        raise InputError(f"malformed YAML: {exc}", file=display) from exc


def _locate_duplicate(text: str, display: str, is_json: bool) -> None:
    source = text.replace("\t", " ") if is_json else text
    for node in yaml.compose_all(source, Loader=_BaseLoader):
        if node is not None:
            _reject_duplicate_keys(node, display, (), set())


def _reject_duplicate_keys(node: yaml.Node, display: str, path: NodePath, seen: set[int]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                if key in keys:
                    raise InputError(f"duplicate key {key!r} (first on line {keys[key]})", file=display,
                                     line=key_node.start_mark.line + 1, field=format_path((*path, key)))
                keys[key] = key_node.start_mark.line + 1
            _reject_duplicate_keys(value_node, display, (*path, key), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _reject_duplicate_keys(item, display, (*path, i), seen)


def _walk(node: yaml.Node, path: NodePath, lines: dict[NodePath, int], seen: set[int]) -> None:
    # An aliased node is walked once only: lines stay correct for its first use, and a "billion laughs"
    # document cannot make the walk exponential.
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                child = (*path, str(key_node.value))
                lines[child] = key_node.start_mark.line + 1
                _walk(value_node, child, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*path, i)
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines, seen)
