"""YAML with bounds: hostile or broken input is refused quickly, with one line, before it costs anything.

``yaml.safe_load`` never runs code, but it will build whatever shape it is given: 1,000 nested
brackets end in ``RecursionError``; an alias that refers to the node containing it
(``services: &x [*x]``) builds a list that contains itself, which every later walk (``${VAR}``
interpolation, validation) follows forever; and "billion laughs" (nine anchors, each a list of
nine aliases of the one before) is a few hundred bytes that expand to 387 million values once
anything copies them. :func:`load_yaml` bounds all three before anything is built:

* the document's size (:data:`MAX_BYTES`);
* the nesting depth (:data:`MAX_DEPTH`), checked while composing, so Python's recursion never gets
  near its limit;
* aliases: one that points into the node being composed is refused, and the node graph's size
  *with every alias expanded* (what interpolation would copy) is counted on the shared graph,
  in time proportional to its distinct nodes, against :data:`MAX_VALUES`.

Config files use anchors and aliases (``x-defaults: &d``, ``<<: *d``) and stay far below these.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, SequenceNode

#: a docktor.yaml is a few KiB; a megabyte is a mistake or an attack
MAX_BYTES = 1024 * 1024
#: services[0].rules.scale_up_when[1] is 5 levels; plugin settings add a few
MAX_DEPTH = 64
#: values after every alias is expanded (a large real config has a few thousand)
MAX_VALUES = 100_000


class YAMLTooBig(ValueError):
    """The document exceeds a bound; ``str()`` is the one line to show."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts depth and refuses an alias into an unfinished node."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._open_anchors: set[str] = set()

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """PyYAML's constructors trip on some tagged values (``!!int`` with no digits: IndexError):
        a YAML error at that value, like any other, not a crash."""
        try:
            return super().construct_object(node, deep)
        except (IndexError, KeyError, AttributeError) as e:
            raise ConstructorError(
                None, None, f"{node.tag.rsplit(':', 1)[-1]} value {node.value!r} cannot be read ({type(e).__name__})"
                if isinstance(node.value, str) else f"a value cannot be read ({type(e).__name__})", node.start_mark
            ) from None

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, AliasEvent):
            if event.anchor in self._open_anchors:
                raise ComposerError(
                    None, None, f"alias *{event.anchor} refers to the node that contains it (a loop)", mark
                )
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        anchor = event.anchor if isinstance(event, CollectionStartEvent | ScalarEvent) else None
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open_anchors.discard(anchor)


def expanded_size(root: Node) -> int:
    """How many values ``root`` holds with every alias expanded, counted once per distinct node.

    Iterative (no recursion) and memoized on the shared graph, so billion laughs is counted in a
    few hundred steps. Stops counting past :data:`MAX_VALUES`.
    """
    sizes: dict[int, int] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if not children_done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(c), 1) for c in children)
        sizes[key] = min(total, MAX_VALUES + 1)
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml(text: str) -> Any:
    """Parse one YAML document within the bounds. Raises :class:`YAMLTooBig` or ``yaml.YAMLError``."""
    if len(text) > MAX_BYTES:
        raise YAMLTooBig(f"too large: {len(text):,} characters (at most {MAX_BYTES:,} bytes)")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = expanded_size(node)
        if size > MAX_VALUES:
            raise YAMLTooBig(
                f"anchors and aliases expand to more than {MAX_VALUES:,} values (an alias bomb?); write the values out"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()
