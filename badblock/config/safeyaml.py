"""YAML for configs: the types of ``yaml.safe_load``, with what a hostile file can do refused.

:class:`ConfigLoader` is PyYAML's ``SafeLoader`` (no Python objects, no code) plus four limits,
each reported as a :class:`YamlRefused` naming the line:

- aliases may not expand the document beyond ``MAX_NODES`` nodes (a "billion laughs" bomb of
  nine anchors, each listing the previous one nine times, is a few hundred bytes that expand
  to 9^9 nodes: the check walks the composed node graph once, sharing counts between the uses
  of a node, so it costs the size of the file, not of the expansion);
- an alias may not refer to a node that contains it (a recursive structure);
- nesting deeper than ``MAX_DEPTH`` levels is refused while composing, before Python's
  recursion limit turns it into a traceback (PyYAML composes and constructs recursively);
- a key repeated in one mapping is an error naming the key and both lines (YAML itself says
  keys are unique; PyYAML would silently keep the last value).

Anchors and aliases within those limits work as usual, merge keys (``<<: *base``) too.
"""

from __future__ import annotations

import reprlib

import yaml

MAX_DEPTH = 64  # a config is 2-3 levels deep
MAX_NODES = 100_000  # nodes after alias expansion; configs have a few hundred

_MERGE_TAG = "tag:yaml.org,2002:merge"

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 6
_SHORT.maxlevel = 3


def short_repr(value) -> str:
    """A bounded ``repr`` for error messages: never the whole of a large (or aliased) value."""
    return _SHORT.repr(value)


class YamlRefused(yaml.YAMLError):
    """A document refused by :class:`ConfigLoader`; ``line`` is 1-based (None if unknown)."""

    def __init__(self, problem: str, mark=None):
        self.problem = problem
        self.line = None if mark is None else mark.line + 1
        super().__init__(problem if self.line is None else f"{problem} (line {self.line})")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def check_expansion(root: yaml.Node, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH):
    """Refuse a node graph whose alias expansion exceeds ``max_nodes`` nodes or ``max_depth``
    levels, or holds a cycle. Iterative depth-first walk with the expanded size and depth of
    each distinct node memoised: linear in the distinct nodes."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    started: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > max_nodes:
                raise YamlRefused(f"aliases expand the document beyond {max_nodes} nodes "
                                  "(an alias bomb?)", node.start_mark)
            if depth[key] > max_depth:
                raise YamlRefused(f"aliases nest the document deeper than {max_depth} levels",
                                  node.start_mark)
            continue
        if key in size:
            continue
        if key in started:  # pushed again by one of its own descendants: a cycle
            raise YamlRefused("an alias refers to a node that contains it (recursive structure)",
                              node.start_mark)
        started.add(key)
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in started and id(kid) not in size:
                raise YamlRefused("an alias refers to a node that contains it (recursive "
                                  "structure)", kid.start_mark)
            if id(kid) not in size:
                stack.append((kid, False))


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the limits of this module (use through :func:`load`)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliased = False

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliased = True
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise YamlRefused(f"nested deeper than {MAX_DEPTH} levels",
                              self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        if self._aliased and node is not None:
            check_expansion(node)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue  # merged keys may be overridden; complex keys: the base class
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise YamlRefused(f"duplicate key {short_repr(key)} (first at line "
                                      f"{seen[key]})", key_node.start_mark)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load(text: str):
    """Parse one YAML document with :class:`ConfigLoader`.

    Raises :class:`YamlRefused` for the limits above and ``yaml.YAMLError`` for bad syntax;
    a value PyYAML cannot build (an integer of more than 4300 digits) is a
    :class:`YamlRefused` too, not a ``ValueError``.
    """
    loader = ConfigLoader(text)
    try:
        return loader.get_single_data()
    except (ValueError, OverflowError) as exc:
        raise YamlRefused(f"value cannot be read: {str(exc).splitlines()[0][:120]}") from None
    finally:
        loader.dispose()
