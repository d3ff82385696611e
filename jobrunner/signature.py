"""Job parameters as JSON: what a worker publishes in the catalog, and the check of an
enqueue's kwargs against them, in the client, without importing job code (guarantee 9).

`parameters_of(fn)` describes each keyword parameter of a job function (but `ctx`): its
name, whether it is required, its default (when it is JSON), and a JSON schema of its type
derived from the annotation: `int`, `float`, `str`, `bool`, `list[X]`, `dict[str, X]`,
`X | None`, `Literal[...]`, a `TypedDict`, a pydantic model (its own JSON schema), or `{}`
(anything) for what has no JSON meaning. `check_kwargs(job, parameters, kwargs)` refuses an
unknown parameter (with a did-you-mean), a missing required one, and a value of the wrong
JSON type, naming the parameter and the expected type (`InvalidArguments`).
"""

from __future__ import annotations

import difflib
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jobrunner.errors import InvalidArguments

Schema = dict[str, Any]
SIMPLE: dict[type, Schema] = {
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    list: {"type": "array"},
    tuple: {"type": "array"},
    dict: {"type": "object"},
    type(None): {"type": "null"},
}
VAR_KEYWORD = "**kwargs"  # the name of the entry saying the function takes any keyword


def parameters_of(fn: Callable[..., Any]) -> list[dict[str, Any]]:
    """The keyword parameters of a job function as JSON (see the module's doc)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return [{"name": VAR_KEYWORD}]
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: types unknown
        hints = {}
    found: list[dict[str, Any]] = []
    for name, param in signature.parameters.items():
        if name == "ctx" or param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL):
            continue
        if param.kind is param.VAR_KEYWORD:
            found.append({"name": VAR_KEYWORD})
            continue
        entry: dict[str, Any] = {"name": name, "required": param.default is param.empty}
        entry["schema"] = schema_of(hints.get(name, Any))
        if param.default is not param.empty and _is_json(param.default):
            entry["default"] = param.default
        found.append(entry)
    return found


def _is_json(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def schema_of(hint: Any) -> Schema:
    """A JSON schema of a type annotation; `{}` for anything."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint in SIMPLE:
        return dict(SIMPLE[hint])
    if origin is typing.Literal:
        return {"enum": [a for a in args if _is_json(a)]}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [schema_of(a) for a in args]}
    if origin in (list, tuple, set, frozenset, Sequence):
        items = schema_of(args[0]) if args else {}
        return {"type": "array", "items": items} if items else {"type": "array"}
    if origin in (dict, Mapping):
        values = schema_of(args[1]) if len(args) == 2 else {}
        return {"type": "object", "additionalProperties": values} if values else {"type": "object"}
    if typing.is_typeddict(hint):
        hints = typing.get_type_hints(hint)
        return {
            "type": "object",
            "properties": {k: schema_of(v) for k, v in hints.items()},
            "required": sorted(getattr(hint, "__required_keys__", ())),
        }
    model_schema = getattr(hint, "model_json_schema", None)  # a pydantic model
    if callable(model_schema):
        try:
            return dict(model_schema())
        except Exception:
            return {"type": "object"}
    return {}


def describe(schema: Schema) -> str:
    """A schema as a reader names the type: `integer`, `list of string`, `string or null`."""
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(describe(s) for s in schema["anyOf"])
    kind = schema.get("type")
    if kind == "array" and schema.get("items"):
        return f"list of {describe(schema['items'])}"
    if kind == "object" and schema.get("title"):
        return f"object ({schema['title']})"
    return str(kind) if kind else "any JSON value"


def matches(schema: Schema, value: Any) -> bool:
    """Whether a JSON value fits the schema (types, enums, items, required properties)."""
    if not schema:
        return True
    if "enum" in schema:
        return value in schema["enum"] and type(value) in {type(v) for v in schema["enum"]}
    if "anyOf" in schema:
        return any(matches(s, value) for s in schema["anyOf"])
    kind = schema.get("type")
    if kind is None:  # a pydantic schema of $refs etc.: not checked further
        return True
    if not _type_fits(kind, value):
        return False
    if kind == "array":
        return all(matches(schema.get("items", {}), v) for v in value)
    if kind == "object":
        return _object_fits(schema, value)
    return True


def _type_fits(kind: str, value: Any) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    expected = {"string": str, "boolean": bool, "array": list, "object": dict}.get(kind)
    if kind == "null":
        return value is None
    return expected is None or isinstance(value, expected)


def _object_fits(schema: Schema, value: Mapping[str, Any]) -> bool:
    if any(k not in value for k in schema.get("required", ())):
        return False
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", {})
    return all(
        matches(props[k] if k in props else extra if isinstance(extra, dict) else {}, v)
        for k, v in value.items()
    )


def check_kwargs(
    job: str, parameters: Sequence[Mapping[str, Any]], kwargs: Mapping[str, Any]
) -> None:
    """Refuse kwargs that do not fit the job's published parameters (InvalidArguments)."""
    named = {p["name"]: p for p in parameters if p["name"] != VAR_KEYWORD}
    open_ended = len(named) < len(parameters)
    for key in kwargs:
        if key not in named and not open_ended:
            close = difflib.get_close_matches(key, list(named), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            allowed = ", ".join(named) or "none"
            raise InvalidArguments(
                f"job {job!r} has no parameter {key!r}: {hint}its parameters: {allowed}"
            )
    for name, param in named.items():
        if name not in kwargs:
            if param.get("required"):
                kind = describe(param.get("schema", {}))
                raise InvalidArguments(f"job {job!r} needs the parameter {name!r} ({kind})")
            continue
        schema = param.get("schema", {})
        if not matches(schema, kwargs[name]):
            raise InvalidArguments(
                f"job {job!r}: parameter {name!r} must be {describe(schema)}, "
                f"got {json.dumps(kwargs[name])[:80]}"
            )


def signature_text(job: str, parameters: Sequence[Mapping[str, Any]] | None) -> str:
    """`job(name: integer, region: string = "eu", **kwargs)` for `jobs show`."""
    if parameters is None:
        return f"{job}(...)  (not published: a worker of an earlier version published it)"
    parts = []
    for p in parameters:
        if p["name"] == VAR_KEYWORD:
            parts.append("**kwargs")
            continue
        text = f"{p['name']}: {describe(p.get('schema', {}))}"
        if not p.get("required"):
            text += f" = {json.dumps(p['default'])}" if "default" in p else " = (default)"
        parts.append(text)
    return f"{job}({', '.join(parts)})"
