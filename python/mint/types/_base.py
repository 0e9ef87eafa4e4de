"""Base classes shared by every mint type: immutable pydantic models in two strictness flavours."""

from __future__ import annotations

import pydantic


class RequestModel(pydantic.BaseModel):
    """Base of types a user builds and sends (parameters, inputs).

    Immutable, and unknown fields are an error, so a misspelt argument (``max_token=``) fails at
    construction instead of being silently ignored.
    """

    model_config = pydantic.ConfigDict(
        frozen=True,
        extra="forbid",
        protected_namespaces=(),
        use_attribute_docstrings=True,
        ser_json_inf_nan="constants",
    )

    def __str__(self) -> str:
        return repr(self)


class ResponseModel(pydantic.BaseModel):
    """Base of types mint returns (results, records, responses).

    Immutable; unknown fields are ignored so that an older client can read a newer server's reply.
    Non-finite floats (a NaN loss, a -inf log-prob) survive a JSON round trip.
    """

    model_config = pydantic.ConfigDict(
        frozen=True,
        extra="ignore",
        protected_namespaces=(),
        use_attribute_docstrings=True,
        ser_json_inf_nan="constants",
    )

    def __str__(self) -> str:
        return repr(self)
