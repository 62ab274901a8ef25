"""The one reader of files users give the testbed: size-limited, UTF-8, parsed once, aliases bounded, no duplicate keys.

Every problem is a SpecError naming the file and the place (``line 3, column 7`` or the key path), so
no input file can reach the user as a traceback, hang the tool or exhaust its memory:

* a file larger than `MAX_BYTES` is refused before it is read;
* a NUL byte means a binary file; bytes that are not UTF-8 are reported at their line and column;
* the YAML is scanned by libyaml (when present) and composed here, without recursion, into nodes:
  nesting deeper than `MAX_DEPTH` and aliases that would expand to more than `MAX_ALIAS_NODES`
  nodes in all ("billion laughs"), or that refer to the node containing them, are refused;
* a mapping key given twice is an error naming its path and both lines;
* the nodes are then turned into plain data (PyYAML's safe constructor) once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from yaml import events
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from testbed.errors import SpecError

#: The largest file the testbed reads (its own topologies and experiments are a few kB).
MAX_BYTES = 256 * 1024
#: The deepest nesting of mappings and lists accepted (the topology format needs 8).
MAX_DEPTH = 64
#: How many nodes all aliases of one document may expand to together.
MAX_ALIAS_NODES = 10_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_text(path: str | Path, limit: int = MAX_BYTES) -> str:
    """The text of `path`: at most `limit` bytes of UTF-8 (a BOM is dropped); SpecError otherwise."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise SpecError("", f"file is {size} bytes; the testbed reads files of at most {limit} bytes", source)
            raw = f.read(limit + 1)
    except OSError as exc:
        raise SpecError("", f"cannot read: {exc.strerror or exc}", source) from None
    if len(raw) > limit:
        raise SpecError("", f"file is larger than {limit} bytes, the most the testbed reads", source)
    nul = raw.find(b"\0")
    if nul >= 0:
        raise SpecError(_place(raw, nul), "a binary file (NUL byte); expected UTF-8 text", source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(_place(raw, exc.start), f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", source) from None
    return text[1:] if text.startswith("\ufeff") else text


def _place(raw: bytes, offset: int) -> str:
    """`line L, column C` of byte `offset` (columns counted in bytes, from 1)."""
    line = raw.count(b"\n", 0, offset) + 1
    column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def load_yaml(path: str | Path) -> Any:
    """The data of the YAML file `path` (None when it is empty), read and checked as the module says."""
    return parse_yaml(read_text(path), str(path))


def parse_yaml(text: str, source: str) -> Any:
    """The data of one YAML document `text`; `source` names it in errors."""
    loader = _Loader(text)
    try:
        node = _Composer(loader, source).document()
        return None if node is None else loader.construct_document(node)
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position].encode() if isinstance(exc.position, int) else b""
        where = _place(before, len(before)) if isinstance(exc.position, int) else ""
        char = f" U+{exc.character:04X}" if isinstance(exc.character, int) else ""
        raise SpecError(where, f"not valid YAML: character{char} is not allowed", source) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise SpecError(where, f"not valid YAML: {problem}", source) from None
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as exc:
        raise SpecError("", f"not valid YAML: {' '.join(str(exc).split())[:200]}", source) from None
    finally:
        loader.dispose()


def load_json(path: str | Path) -> Any:
    """The data of the JSON file `path`, read as `read_text` does; a repeated key is an error naming it."""
    source = str(path)
    text = read_text(path)

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise SpecError(key, "duplicate key", source)
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise SpecError(f"line {exc.lineno}, column {exc.colno}", f"not valid JSON: {exc.msg}", source) from None
    except RecursionError:
        raise SpecError("", "not valid JSON: nested too deeply", source) from None


class _Frame:
    """A mapping or list being composed: its node, its path, and (for a mapping) the key awaiting its value."""

    __slots__ = ("node", "path", "key", "keys", "size")

    def __init__(self, node: Node, path: str) -> None:
        self.node = node
        self.path = path
        self.key: Node | None = None
        self.keys: dict[tuple[str, str], int] = {}
        self.size = 1


class _Composer:
    """Builds the node graph from the parser's events with an explicit stack, checking depth, aliases and keys."""

    def __init__(self, loader: Any, source: str) -> None:
        self.loader = loader
        self.source = source
        self.anchors: dict[str, Node] = {}
        self.sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, aliases expanded
        self.expanded = 0

    def error(self, mark: Any, message: str) -> SpecError:
        return SpecError(f"line {mark.line + 1}, column {mark.column + 1}", message, self.source)

    def document(self) -> Node | None:
        """The one document's root node (None for an empty stream)."""
        get = self.loader.get_event
        get()  # stream start
        if self.loader.check_event(events.StreamEndEvent):
            return None
        get()  # document start
        root = self._node()
        get()  # document end
        if not self.loader.check_event(events.StreamEndEvent):
            raise self.error(self.loader.peek_event().start_mark, "expected one YAML document, found another")
        return root

    def _node(self) -> Node:
        stack: list[_Frame] = []
        while True:
            event = self.loader.get_event()
            if isinstance(event, (events.SequenceEndEvent, events.MappingEndEvent)):
                done = stack.pop()
                parent = stack[-1] if stack else None
                done.node.end_mark = event.end_mark
                self.sizes[id(done.node)] = done.size
                node, size = done.node, done.size
            elif isinstance(event, events.AliasEvent):
                parent = stack[-1] if stack else None
                node = self.anchors.get(event.anchor)  # type: ignore[assignment]
                if node is None:
                    raise self.error(event.start_mark, f"alias *{event.anchor} has no anchor before it")
                if id(node) not in self.sizes:
                    raise self.error(event.start_mark, f"alias *{event.anchor} refers to a node that contains it")
                size = self.sizes[id(node)]
                self.expanded += size
                if self.expanded > MAX_ALIAS_NODES:
                    raise self.error(event.start_mark, f"aliases expand to more than {MAX_ALIAS_NODES} nodes; "
                                                       "write the values out instead")
            else:
                parent = stack[-1] if stack else None
                node = self._start(event, parent)
                if not isinstance(node, ScalarNode):
                    if len(stack) >= MAX_DEPTH:
                        raise self.error(event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
                    stack.append(_Frame(node, self._child_path(parent)))
                    continue
                size = 1
            if parent is None:
                return node
            self._attach(parent, node, size)

    def _start(self, event: Any, parent: _Frame | None) -> Node:
        """The node a scalar or collection start event begins (collections still empty)."""
        if isinstance(event, events.ScalarEvent):
            tag = event.tag
            if tag is None or tag == "!":
                tag = self.loader.resolve(ScalarNode, event.value, event.implicit)
            node: Node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        elif isinstance(event, (events.SequenceStartEvent, events.MappingStartEvent)):
            kind = SequenceNode if isinstance(event, events.SequenceStartEvent) else MappingNode
            tag = event.tag
            if tag is None or tag == "!":
                tag = self.loader.resolve(kind, None, event.implicit)
            node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
        else:
            raise self.error(event.start_mark, f"unexpected {type(event).__name__}")
        if event.anchor is not None:
            if event.anchor in self.anchors:
                raise self.error(event.start_mark, f"anchor &{event.anchor} is defined twice")
            self.anchors[event.anchor] = node
        return node

    @staticmethod
    def _child_path(parent: _Frame | None) -> str:
        """The key path of the node about to be added to `parent`."""
        if parent is None:
            return ""
        if isinstance(parent.node, SequenceNode):
            return f"{parent.path}[{len(parent.node.value)}]"
        key = parent.key.value if isinstance(parent.key, ScalarNode) else "?"
        return f"{parent.path}.{key}" if parent.path else str(key)

    def _attach(self, parent: _Frame, node: Node, size: int) -> None:
        """Add a finished `node` to `parent`: an item, a key, or the value of the pending key."""
        parent.size += size
        if isinstance(parent.node, SequenceNode):
            parent.node.value.append(node)
        elif parent.key is None:
            if isinstance(node, ScalarNode) and node.tag != "tag:yaml.org,2002:merge":
                line = node.start_mark.line + 1
                first = parent.keys.get((node.tag, node.value))
                if first is not None:
                    path = f"{parent.path}.{node.value}" if parent.path else str(node.value)
                    raise SpecError(path, f"duplicate key {node.value!r} (line {line}; first at line {first})",
                                    self.source)
                parent.keys[(node.tag, node.value)] = line
            parent.key = node
        else:
            key, parent.key = parent.key, None
            parent.node.value.append((key, node))
