"""Strict YAML for the files people edit (the grid, recipes, run configs).

PyYAML accepts a key written twice (the last one silently wins) and reports a syntax error as a
traceback. Here both are one :class:`YamlError` naming the file, line and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlError(ValueError):
    """A YAML text that cannot be read as written; the message names the source and position."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in any mapping."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: let PyYAML report it
            break
        if duplicate:
            first = seen[key].start_mark
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {first.line + 1}, column {first.column + 1})", mark)
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def parse(text: str, source: str) -> Any:
    """The YAML document in ``text`` (``source`` names it in errors)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = err.problem or err.context or "not valid YAML"
        raise YamlError(f"{where}: {problem}") from None
    except yaml.YAMLError as err:
        raise YamlError(f"{source}: not valid YAML ({err})") from None


def read(path: str | Path) -> Any:
    """The YAML document in the file ``path``; a YamlError naming it when unreadable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise YamlError(f"{path}: cannot be read ({err})") from None
    return parse(text, str(path))
