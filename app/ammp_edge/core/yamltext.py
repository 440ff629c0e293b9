"""YAML from outside: drivers and site configs may be written in YAML (the same schema as JSON;
comments are why driver authors want it). Bounded like core.jsontext, with the same limits.

- `yaml.safe_load`'s rules and no more: a safe loader (no Python objects), with
  - the limits of core.jsontext: at most MAX_BYTES (4 MiB) of UTF-8, nested at most MAX_DEPTH (64)
    levels, measured on the event stream before anything is built (pyyaml's composer recurses once
    per level);
  - no anchors or aliases (`&a`, `*a`): the "billion laughs" alias bomb cannot be written, and a
    driver has `common` for what anchors would share;
  - no tags but the plain JSON ones (`!!str`, `!!int`, `!!float`, `!!bool`, `!!null`, `!!map`,
    `!!seq`): no timestamps, sets, binary;
  - JSON's values only, as YAML 1.2's core schema reads them: `true`/`false` (not yes/no/on/off, so
    `NO` stays the text "NO"), `null`/`~`/empty, integers (decimal, 0x hex, 0o octal; `012` is twelve,
    not octal), floats; everything else is text;
  - a mapping key is always text, as written: `0x8000: null` in a valuemap is the key "0x8000"
    (YAML would read the number 32768), `3:` is "3"; a key given twice is refused.
- One document per file.

`load(data, what, name)` reads a file: YAML when its name ends in .yaml/.yml, JSON (core.jsontext)
when it ends in .json; a name with neither (or none) is YAML when the text does not start with `{`
or `[` (after spaces and `#` comment lines). So every JSON config and driver is read exactly as
before. The config door itself takes JSON only (every door gives the same answer for the same
bytes): a door a person uses with a YAML file (`up --config site.yaml`, the web UI's upload of a
.yaml file or paste marked YAML) hands it `to_json(data)`, the JSON text of its value. What the
cloud sends is JSON and goes to the door unchanged, byte for byte.

pyyaml is imported only when a YAML text is met: a bus process never loads it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import jsontext
from .problems import ConfigUnusable, Problem

YAML_SUFFIXES = (".yaml", ".yml")
_FIRST = re.compile(r"(?:\s|#[^\n]*)*")
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}

_loader_class: Any = None


def _refuse(what: str, message: str) -> ConfigUnusable:
    return ConfigUnusable([Problem("$", f"{what} {message}")])


def yaml_name(name: object) -> bool:
    """Does this file name say YAML (.yaml, .yml)?"""
    return str(name).lower().endswith(YAML_SUFFIXES)


def is_yaml(data: bytes | str, name: str | None = None) -> bool:
    """YAML by its name (.yaml, .yml; .json is JSON), else by its first character: JSON starts with
    `{` or `[`."""
    if name:
        if yaml_name(name):
            return True
        if str(name).lower().endswith(".json"):
            return False
    head = data[:65536]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    text = text.lstrip("\ufeff")
    rest = text[_FIRST.match(text).end() :]  # type: ignore[union-attr]  # matches always (maybe nothing)
    return not rest.startswith(("{", "["))


def _loader() -> Any:
    """A safe loader class with YAML 1.2 core schema resolvers and text keys (built once)."""
    global _loader_class
    if _loader_class is not None:
        return _loader_class
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc, valid-type]
        yaml_implicit_resolvers: dict = {}
        yaml_constructors = dict(base.yaml_constructors)

    Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:int",
        re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
        list("-+0123456789"),
    )
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+0123456789."),
    )

    def construct_int(loader: Any, node: Any) -> int:
        text = loader.construct_scalar(node)
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        return sign * int(digits, 10)

    def construct_float(loader: Any, node: Any) -> float:
        text = loader.construct_scalar(node).lower()
        if text.endswith(".inf"):
            return float("-inf") if text.startswith("-") else float("inf")
        if text == ".nan":
            return float("nan")
        return float(text)

    def construct_bool(loader: Any, node: Any) -> bool:
        return loader.construct_scalar(node).lower() == "true"

    def construct_mapping(loader: Any, node: Any) -> Any:
        data: dict = {}
        yield data
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be text, not a list or mapping", key_node.start_mark
                )
            key = key_node.value  # the key as written: 0x8000 stays "0x8000"
            if key in data:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping", key_node.start_mark
                )
            data[key] = loader.construct_object(value_node)

    Loader.add_constructor("tag:yaml.org,2002:int", construct_int)
    Loader.add_constructor("tag:yaml.org,2002:float", construct_float)
    Loader.add_constructor("tag:yaml.org,2002:bool", construct_bool)
    Loader.add_constructor("tag:yaml.org,2002:map", construct_mapping)
    _loader_class = Loader
    return Loader


def _check_events(text: str, what: str, max_depth: int) -> None:
    """Depth, anchors, aliases, tags and the number of documents, from the event stream (iterative)."""
    import yaml

    loader = _loader()
    depth = documents = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            where = f"line {event.start_mark.line + 1}, column {event.start_mark.column + 1}"
            if isinstance(event, yaml.AliasEvent):
                raise _refuse(what, f"uses an alias (*{event.anchor}) at {where}; anchors and aliases are not accepted")
            if getattr(event, "anchor", None) is not None:
                raise _refuse(
                    what, f"sets an anchor (&{event.anchor}) at {where}; anchors and aliases are not accepted"
                )
            tag = getattr(event, "tag", None)
            if tag is not None and tag not in _PLAIN_TAGS and tag != "!":
                raise _refuse(what, f"has the tag {tag} at {where}; only JSON's kinds of value are accepted")
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _refuse(what, f"has a second document at {where}; one document per file")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > max_depth:
                    raise jsontext.OverLimit(
                        [
                            Problem(
                                "$",
                                f"{what} nests lists and mappings more than {max_depth} levels deep (at {where}); "
                                f"the limit is {max_depth} levels",
                            )
                        ]
                    )
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as exc:
        raise _refuse(what, f"is not valid YAML: {exc}") from None


def parse(
    data: bytes | str, what: str = "config", max_bytes: int = jsontext.MAX_BYTES, max_depth: int = jsontext.MAX_DEPTH
) -> Any:
    """The value of YAML `data` within the limits (see the module text); ConfigUnusable otherwise."""
    import yaml

    # the size limit and UTF-8 as core.jsontext checks them; its depth scan counts JSON brackets,
    # which YAML need not have, so the depth is measured on YAML's own events
    text = jsontext.decode(data, what, max_bytes, 1 << 30)
    _check_events(text, what, max_depth)
    try:
        return yaml.load(text, Loader=_loader())  # a SafeLoader subclass (see _loader): safe_load rules
    except yaml.YAMLError as exc:
        raise _refuse(what, f"is not valid YAML: {exc}") from None
    except (ValueError, OverflowError) as exc:
        raise _refuse(what, f"is not valid YAML: {exc}") from None


def load(data: bytes | str, what: str = "config", name: str | None = None) -> Any:
    """YAML or JSON (see `is_yaml`), each within the limits; ConfigUnusable naming the problem."""
    if is_yaml(data, name):
        return parse(data, what)
    return jsontext.parse(data, what)


def to_json(data: bytes | str, what: str = "config") -> bytes:
    """The JSON text of YAML `data`'s value, for a door (see the module text); ConfigUnusable naming
    the problem when it is not YAML within the limits."""
    return json.dumps(parse(data, what), indent=2, ensure_ascii=False).encode("utf-8")
