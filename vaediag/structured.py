"""Parsing the text of a file the user named (TOML, JSON, YAML) into plain data, never into a traceback.

:mod:`vaediag.safeio` makes reading such a file safe (regular files only, no blocking, a size cap); this
module makes *parsing* it safe. Each ``loads_*`` function returns plain data or raises the caller's
error class (a :class:`~vaediag.errors.VaediagError` subclass) with one line naming the file:

- every failure of the parser is that error: a syntax error, nesting so deep that the parser recurses
  out of stack (``a = [[[[...]]]]``), an integer of more than 4,300 digits (Python's conversion limit);
- documents nested deeper than :data:`MAX_DEPTH` levels are refused even where the parser copes (TOML's
  dotted keys build any depth without recursing), so code that walks the result recursively, and the
  messages that show a value, stay within the stack;
- YAML anchors and aliases are checked on the composed node graph, before any object is built: a
  document whose aliases expand to more than ``max_nodes`` nodes (the "billion laughs", 700 bytes that
  expand to 387 million) or refer to themselves (a cycle) is refused.
"""

from __future__ import annotations

import json
import reprlib
import sys
from typing import Any, Type

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: tomli is tomllib's source, installed there by the package's dependencies
    import tomli as tomllib

from vaediag.errors import VaediagError

__all__ = ["MAX_DEPTH", "MAX_YAML_NODES", "depth_exceeds", "loads_toml", "loads_json", "loads_yaml", "short_repr"]

#: Deepest nesting of tables/arrays/objects any of our files needs is 4; this leaves room and stays far
#: from Python's recursion limit (1000) for code that walks the data recursively.
MAX_DEPTH = 64
#: Nodes a YAML document may expand to once its aliases are followed (Lightning's hparams.yaml: tens).
MAX_YAML_NODES = 100_000


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = 4
_REPR.maxlevel = 3


def short_repr(value: Any) -> str:
    """``repr(value)`` bounded in length and depth, for a user's value in a one-line message."""
    return _REPR.repr(value)


def depth_exceeds(obj: Any, limit: int = MAX_DEPTH) -> bool:
    """True when dicts/lists/tuples in ``obj`` nest more than ``limit`` levels deep (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(obj, 0)]
    seen: set[int] = set()
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth >= limit:
            return True
        if id(node) in seen:  # shared (never the case for TOML/JSON; cheap insurance)
            continue
        seen.add(id(node))
        stack.extend((c, depth + 1) for c in children)
    return False


def _too_deep(where: str, error: Type[VaediagError]) -> VaediagError:
    return error(f"{where}: nested deeper than {MAX_DEPTH} levels; this is not a file of the expected shape")


def loads_toml(text: str, *, where: str, error: Type[VaediagError]) -> dict[str, Any]:
    """``tomllib.loads(text)``; any failure is ``error("<where>: <what>")``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{where}: {exc}") from None
    except RecursionError:
        raise _too_deep(where, error) from None
    except ValueError as exc:  # e.g. an integer beyond Python's 4,300-digit conversion limit
        raise error(f"{where}: a value that cannot be converted ({_reason(exc)})") from None
    if depth_exceeds(data):
        raise _too_deep(where, error)
    return data


def loads_json(text: str, *, where: str, error: Type[VaediagError]) -> Any:
    """``json.loads(text)``; any failure is ``error("<where>: <what>")``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where} is not valid JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise _too_deep(where, error) from None
    except ValueError as exc:  # an integer beyond the conversion limit
        raise error(f"{where} is not valid JSON (a value that cannot be converted: {_reason(exc)})") from None
    if depth_exceeds(data):
        raise _too_deep(where, error)
    return data


def loads_yaml(text: str, *, where: str, error: Type[VaediagError], max_nodes: int = MAX_YAML_NODES) -> Any:
    """``yaml.safe_load(text)`` with the node graph checked first (aliases, cycles, depth, expanded size)."""
    import yaml

    try:  # the reader checks the text for unprintable characters as it is constructed
        _check_yaml_events(text, where=where, error=error)
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise error(f"{where} is not valid YAML ({_first_line(exc)})") from None
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise _too_deep(where, error) from None
        except yaml.YAMLError as exc:
            raise error(f"{where} is not valid YAML ({_first_line(exc)})") from None
        if node is None:
            return None
        _check_yaml_graph(node, where=where, error=error, max_nodes=max_nodes)
        try:
            return loader.construct_document(node)
        except RecursionError:
            raise _too_deep(where, error) from None
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            raise error(f"{where} is not valid YAML ({_first_line(exc)})") from None
    finally:
        loader.dispose()


def _reason(exc: BaseException) -> str:
    """The first clause of a conversion error (Python's advice to raise its digit limit is not for users)."""
    return _first_line(exc).split(";")[0]


def _check_yaml_events(text: str, *, where: str, error: Type[VaediagError]) -> None:
    """Nesting depth from the parser's event stream (a state machine: no recursion), before the composer
    (which recurses per level, and takes seconds to fail at Python's recursion limit) sees the text."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep(where, error)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_yaml_graph(root: Any, *, where: str, error: Type[VaediagError], max_nodes: int) -> None:
    """Expanded size (aliases followed), depth and cycles of a composed YAML node graph, without expanding it."""
    import yaml

    size: dict[int, int] = {}  # node id -> nodes in its expansion (itself included)
    depth: dict[int, int] = {}  # node id -> levels below it
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in kids)
            depth[key] = 1 + max((depth[id(c)] for c in kids), default=0)
            if size[key] > max_nodes:
                raise error(f"{where}: its anchors and aliases expand to more than {max_nodes:,} values; "
                            "this is not a file of the expected shape")
            if depth[key] > MAX_DEPTH:
                raise _too_deep(where, error)
            continue
        if key in size:
            continue
        if key in on_path:
            raise error(f"{where}: an alias refers to a value that contains it (a cycle)")
        if not isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            size[key], depth[key] = 1, 0
            continue
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    return []
