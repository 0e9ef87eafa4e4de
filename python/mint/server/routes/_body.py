"""Request bodies: lenient pydantic models (the SDK also sends fields mint does not use, such as
``type``); field errors become 400s naming the field."""

from __future__ import annotations

import pydantic


class Body(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", protected_namespaces=())
