"""Inline JSON schemas (in crew files and task templates) as pydantic models.

Supports what a task's answer needs: objects with properties and required fields, strings,
integers, numbers, booleans, arrays, nested objects, enums, descriptions, defaults, and the
bounds minItems/maxItems/minLength/maxLength/minimum/maximum. Anything else is reported, with
where it is, rather than silently dropped.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from crew.errors import shorten
from crew.yamlfile import Location

_SCALARS: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}
_KEYWORDS = (
    "type properties required items enum description default title additionalProperties"
    " minItems maxItems minLength maxLength minimum maximum"
)
# JSON-schema bounds and the pydantic Field arguments that keep them in the model's own schema
# (so a grammar-constrained model, like the local one, cannot run past them).
_BOUNDS = {"minItems": "min_length", "maxItems": "max_length", "minLength": "min_length",
           "maxLength": "max_length", "minimum": "ge", "maximum": "le"}  # fmt: skip
SchemaProblem = tuple[Location, str]
"""Where in the schema (``("properties", "days", "items")``) and what is wrong there."""


def schema_model(name: str, schema: Any) -> tuple[type[BaseModel] | None, list[SchemaProblem]]:
    """An inline JSON schema as a pydantic model called ``name``, or None and the problems.

    Supported: ``type`` (object, string, integer, number, boolean, array), ``properties``,
    ``required``, ``items``, ``enum``, ``description``, ``default``, ``title`` and
    ``additionalProperties: false``; objects nest. The top level must be an object.
    """
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        return None, [
            (
                (),
                "an inline output_model must be a JSON schema with `type: object`, got"
                f" {shorten(repr(schema), 60)}; or name a pydantic model as 'module:Class'.",
            )
        ]
    problems: list[SchemaProblem] = []
    model = _object_model(name, schema, (), problems)
    return (None if problems else model), problems


def _object_model(
    name: str, schema: Mapping[str, Any], loc: Location, problems: list[SchemaProblem]
) -> type[BaseModel]:
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    if not isinstance(properties, Mapping):
        problems.append(((*loc, "properties"), "must map each property name to its schema."))
        properties = {}
    if not isinstance(required, list) or not all(r in properties for r in required):
        listed = ", ".join(map(str, properties)) or "none"
        problems.append(((*loc, "required"), f"must list property names; properties: {listed}."))
        required = []
    fields: dict[str, Any] = {}
    for index, (prop, sub) in enumerate(properties.items()):
        here = (*loc, "properties", prop)
        if not isinstance(prop, str) or not prop:
            problems.append((here, "a property name must be text."))
            continue
        annotation = _annotation(name + camel_case(prop), sub, here, problems)
        sub = sub if isinstance(sub, Mapping) else {}
        default = ... if prop in required else sub.get("default")
        if prop not in required:
            annotation = annotation | None
        if default not in (..., None) and not _valid_default(annotation, default):
            problems.append(((*here, "default"), f"{default!r} does not match the type."))
        field_name, alias = _field_name(prop, index)
        info = Field(default, description=sub.get("description"), alias=alias)
        fields[field_name] = (annotation, info)
    config = ConfigDict(
        extra="forbid" if schema.get("additionalProperties") is False else "ignore",
        validate_by_name=True,
        serialize_by_alias=True,
    )
    return create_model(name, __config__=config, __doc__=schema.get("description"), **fields)


def _annotation(name: str, schema: Any, loc: Location, problems: list[SchemaProblem]) -> Any:
    annotation = _unbounded(name, schema, loc, problems)
    bounds = (
        {_BOUNDS[k]: v for k, v in schema.items() if k in _BOUNDS}
        if isinstance(schema, Mapping)
        else {}
    )
    for key, value in bounds.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            problems.append(((*loc, key), f"must be a number, got {shorten(repr(value), 60)}."))
            return annotation
    return Annotated[annotation, Field(**bounds)] if bounds else annotation


def _unbounded(name: str, schema: Any, loc: Location, problems: list[SchemaProblem]) -> Any:
    if not isinstance(schema, Mapping):
        problems.append(
            (loc, f"must be a schema such as {{type: string}}, got {shorten(repr(schema), 60)}.")
        )
        return Any
    for key in schema:
        if key not in _KEYWORDS.split():
            supported = ", ".join(_KEYWORDS.split())
            message = f"unsupported JSON schema keyword '{key}'; supported: {supported}."
            problems.append(((*loc, key), message))
    kind = schema.get("type")
    if "enum" in schema:
        values = schema["enum"]
        if not isinstance(values, list) or not values or not all(_is_scalar(v) for v in values):
            problems.append(((*loc, "enum"), "must be a non-empty list of values."))
            return Any
        return Literal.__getitem__(tuple(values))
    if isinstance(kind, str) and kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array":
        items = schema.get("items")
        if items is None:
            return list[Any]
        return list[_annotation(name, items, (*loc, "items"), problems)]  # type: ignore[misc]
    if kind == "object":
        if "properties" not in schema:
            return dict[str, Any]
        return _object_model(name, schema, loc, problems)
    message = (
        f"unsupported type {kind!r}; use string, integer, number, boolean, array or object"
        " (or enum: [...])."
    )
    problems.append(((*loc, "type"), message))
    return Any


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _valid_default(annotation: Any, default: Any) -> bool:
    try:
        TypeAdapter(annotation).validate_python(default, strict=True)
    except ValidationError:
        return False
    return True


def _field_name(prop: str, index: int) -> tuple[str, str | None]:
    """A Python field name for a property; names pydantic reserves get an alias."""
    if (
        prop.isidentifier()
        and not keyword.iskeyword(prop)
        and not prop.startswith(("_", "model_"))
        and not hasattr(BaseModel, prop)
    ):
        return prop, None
    return f"field_{index}", prop


def camel_case(text: str) -> str:
    """``day_plan`` -> ``DayPlan``: the name of a model built from a task id or property."""
    name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", text))
    return name if name[:1].isalpha() else f"Model{name}"
