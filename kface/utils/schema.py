"""Typed field checks for the JSON files kface reads back (samples.json, training_config.json, an oracle's
config.json, metrics.json): each format's module declares its fields once, and a damaged or hand-edited file
ends in one line that names the file and the field, never in a ``TypeError`` deep inside a reader.

    MANIFEST_FIELDS = {"seed": Field(int, minimum=0), "complete": Field(bool), ...}
    meta = read_json(path, MANIFEST_FIELDS)          # or check_fields(obj, MANIFEST_FIELDS, where=path)

A field is required unless ``required=False``; fields not declared are left alone (newer writers may add some).
``bool`` is never accepted for ``int`` or ``float`` (JSON ``true`` is not a count), and ``"no"`` is not a bool.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import InputError


@dataclass(frozen=True)
class Field:
    """One field: its JSON type(s) (``int``, ``float``, ``str``, ``bool``, ``list``, ``dict``, ``type(None)``),
    whether it must be there, bounds for numbers, and an optional ``check(value) -> str | None`` (the problem)."""

    types: type | tuple
    required: bool = True
    minimum: float | None = None
    maximum: float | None = None
    check: Callable | None = None


def type_problem(value, types) -> str | None:
    """Why ``value`` is not one of ``types`` (None when it is), in JSON's words."""
    types = types if isinstance(types, tuple) else (types,)
    ok = any(_is(value, t) for t in types)
    if ok:
        return None
    return f"must be {' or '.join(_JSON_NAMES.get(t, t.__name__) for t in types)}, not {_describe(value)}"


_JSON_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
               dict: "an object", type(None): "null"}


def _is(value, t) -> bool:
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, t)


def _describe(value) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def field_problem(value, spec: Field) -> str | None:
    """What is wrong with one present value (None: nothing)."""
    if problem := type_problem(value, spec.types):
        return problem
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            return f"must be >= {spec.minimum:g}, not {value}"
        if spec.maximum is not None and value > spec.maximum:
            return f"must be <= {spec.maximum:g}, not {value}"
    return spec.check(value) if spec.check is not None else None


def check_fields(obj, fields: dict[str, Field], where) -> dict:
    """``obj`` if it is an object whose declared ``fields`` are all right; otherwise an :class:`InputError`
    naming ``where`` (a file) and the first wrong field."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: must hold a JSON object, not {_describe(obj)}")
    for name, spec in fields.items():
        if name not in obj:
            if spec.required:
                raise InputError(f"{where}: field '{name}' is missing")
            continue
        if problem := field_problem(obj[name], spec):
            raise InputError(f"{where}: field '{name}' {problem}")
    return obj


def read_json(path, fields: dict[str, Field] | None = None, hint: str = "") -> dict:
    """A JSON object from ``path``, checked against ``fields``; one InputError (with ``hint``, the fix) for an
    unreadable file, invalid JSON or a wrong field. ``NaN`` and ``+-Infinity`` (not JSON, but what kface 0.3.0
    and earlier wrote, e.g. the SDE solver's ``lambda_min_clipped: -Infinity`` in samples.json) are read as None,
    as kface writes them now."""
    path = Path(path)
    suffix = f"; {hint}" if hint else ""
    try:
        obj = json.loads(path.read_bytes(), parse_constant=lambda name: None)
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror}){suffix}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON ({str(err).splitlines()[0]}){suffix}") from None
    try:
        return check_fields(obj, fields or {}, path)
    except InputError as err:
        raise InputError(f"{err}{suffix}") from None


def finite_or_none(obj):
    """``obj`` with every non-finite float (NaN, +-Infinity) replaced by None: what standard JSON can hold.
    numpy scalars and arrays become Python numbers and lists on the way."""
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj
