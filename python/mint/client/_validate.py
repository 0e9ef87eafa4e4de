"""Turning user input into typed models, with BadRequestError naming the offending field."""

from __future__ import annotations

from typing import TypeVar

import pydantic

from mint.errors import BadRequestError

M = TypeVar("M", bound=pydantic.BaseModel)


def coerce(model: type[M], value, field: str) -> M:
    """``value`` as a ``model`` instance (dicts are validated); errors name ``field.<sub-field>``."""
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise BadRequestError(first.get("msg", str(exc)), field=f"{field}.{loc}" if loc else field) from exc


def build(model: type[M], field: str, **kwargs) -> M:
    """``model(**kwargs)`` with validation errors reported as BadRequestError naming the argument."""
    try:
        return model(**kwargs)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise BadRequestError(first.get("msg", str(exc)), field=loc or field) from exc
