"""Every key of a config class with its default, type and description (``smvi config``).

Read from the pydantic field definitions themselves, so the listing cannot drift from what is validated. The output
is TOML with each key's description and type as a comment above it: a complete, valid config file to copy and edit.
No torch here; the CLI imports the classes it lists.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import tomli_w
from pydantic import BaseModel

__all__ = ["KeyDoc", "describe", "format_keys"]

_BOUNDS = {"Gt": ">", "Ge": "≥", "Lt": "<", "Le": "≤"}


@dataclass(frozen=True)
class KeyDoc:
    """One config key: dotted ``key``, its ``default`` (as JSON: ``None`` when unset), ``type`` and ``description``."""

    key: str
    default: Any
    type: str
    description: str


def _bounds(metadata: list) -> list[str]:
    out = []
    for m in metadata:
        name = type(m).__name__
        if name in _BOUNDS:
            out.append(f"{_BOUNDS[name]} {getattr(m, name.lower())}")
        elif name == "AfterValidator" and getattr(m.func, "__name__", "") == "_distinct":
            out.append("distinct, non-empty")
        elif name == "AfterValidator" and getattr(m.func, "__name__", "") == "_no_repeats":
            out.append("distinct")
    return out


def _choices(metadata: list) -> str | None:
    """A registry's names (a field marked with :func:`smvi.settings.run.one_of`), as a Literal's are shown."""
    for m in metadata:
        names = getattr(getattr(m, "func", None), "choices", None)
        if names is not None:
            return " | ".join(repr(n) for n in names)
    return None


def type_name(annotation: Any) -> str:
    """A short readable type: ``int > 0``, ``list of float ≥ 0``, ``'a' | 'b'``, ``float or unset``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        inner, *meta = args
        choices = _choices(meta)
        return choices or " ".join([type_name(inner), *_bounds(meta)])
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        name = " or ".join(type_name(a) for a in rest)
        return f"{name} or unset" if len(rest) < len(args) else name
    if origin in (tuple, list):
        return f"list of {type_name(args[0])}" if args else "list"
    return getattr(annotation, "__name__", str(annotation))


def describe(cls: type[BaseModel], prefix: str = "", defaults: dict | None = None) -> list[KeyDoc]:
    """The keys of ``cls``, depth first; a nested config's keys are dotted (``model.z_dim``). ``defaults`` (a JSON
    dump) replaces the class's own defaults, as a parent's default instance of a nested config may."""
    if defaults is None:
        defaults = cls.model_construct().model_dump(mode="json", warnings=False)
    docs: list[KeyDoc] = []
    for name, field in cls.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            docs.extend(describe(ann, f"{prefix}{name}.", defaults.get(name)))
            continue
        kind, bounds = _choices(field.metadata) or type_name(ann), _bounds(field.metadata)
        if bounds:
            unset = kind.endswith(" or unset")
            kind = ", ".join([kind.removesuffix(" or unset"), *bounds]) + (", or unset" if unset else "")
        docs.append(KeyDoc(f"{prefix}{name}", defaults.get(name), kind, field.description or ""))
    return docs


def _toml_value(value: Any) -> str:
    """A JSON-like default as one line of TOML (arrays inline)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def format_keys(cls: type[BaseModel], header: str = "", defaults: BaseModel | None = None) -> str:
    """``cls``'s keys as commented TOML: ``# description (type)`` above ``key = default`` under its ``[section]``;
    an unset default is shown commented out. Valid TOML that validates back to the defaults (those of ``defaults``,
    an instance such as a preset, when given)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    section = None
    docs = describe(cls, defaults=None if defaults is None else defaults.model_dump(mode="json"))
    # TOML cannot return to a table once another began: each section's keys together, the top level first
    order = {}
    for doc in docs:
        order.setdefault(doc.key.rpartition(".")[0], len(order))
    for doc in sorted(docs, key=lambda d: (d.key.rpartition(".")[0] != "", order[d.key.rpartition(".")[0]])):
        *path, key = doc.key.split(".")
        if ".".join(path) != (section or ""):
            section = ".".join(path)
            lines += ["", f"[{section}]"]
        lines.append(f"# {doc.description} ({doc.type})" if doc.description else f"# ({doc.type})")
        lines.append(f"# {key} =   (unset)" if doc.default is None else f"{key} = {_toml_value(doc.default)}")
    return "\n".join(lines) + "\n"
