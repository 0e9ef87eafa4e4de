"""TensorData: a dense tensor as a flat list of numbers, a dtype and a shape (JSON-friendly)."""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any, List, Literal, Optional, Union

import numpy as np
from pydantic import Field, PlainValidator, TypeAdapter, ValidationError, WithJsonSchema, model_validator
from typing_extensions import Annotated, TypeAlias

from mint.types._base import RequestModel

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["TensorData", "TensorDtype"]

TensorDtype: TypeAlias = Literal["int64", "float32"]
"""Element type of a TensorData on the wire."""

_INT_LIST = TypeAdapter(List[int])
_FLOAT_LIST = TypeAdapter(List[float])


def _require_list(value: Any) -> list:
    if isinstance(value, tuple):
        return list(value)
    if not isinstance(value, list):
        raise ValueError(f"data must be a flat list of numbers, got {type(value).__name__}")
    return value


# The elements are checked against `dtype` in TensorData's after-validator (one pass, in Rust);
# a plain union here would first try every element as int, which is slow for float data.
_FlatData = Annotated[
    Union[List[int], List[float]],
    PlainValidator(_require_list),
    WithJsonSchema({"type": "array", "items": {"type": "number"}}),
]


def _is_torch_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def dtype_of_numpy(dtype: np.dtype) -> TensorDtype:
    """TensorDtype of a numpy dtype: floats -> "float32"; signed/unsigned ints and bool -> "int64"."""
    kind = np.dtype(dtype).kind
    if kind == "f":
        return "float32"
    if kind in "iub":
        return "int64"
    raise ValueError(f"unsupported numpy dtype {dtype} (need an integer, bool or floating dtype)")


def dtype_of_torch(dtype: "torch.dtype") -> TensorDtype:
    """TensorDtype of a torch dtype: floating -> "float32"; integer and bool -> "int64"."""
    if dtype.is_complex:
        raise ValueError(f"unsupported torch dtype {dtype} (complex)")
    return "float32" if dtype.is_floating_point else "int64"


class TensorData(RequestModel):
    """A dense tensor: ``data`` holds the elements in row-major (C) order, ``shape`` the dimensions.

    ``dtype`` is ``"int64"`` (data are ints) or ``"float32"`` (data are floats). ``shape`` may be None,
    which means 1-D of length ``len(data)``; otherwise ``prod(shape) == len(data)`` is checked.

    Example::

        td = types.TensorData.from_numpy(np.zeros((2, 3), np.float32))
        td.shape            # [2, 3]
        td.to_torch()       # tensor of shape [2, 3], dtype float32
    """

    data: _FlatData
    """Flattened tensor data (row-major)."""

    dtype: TensorDtype
    """Element type: "int64" or "float32"."""

    shape: Optional[List[Annotated[int, Field(ge=0)]]] = None
    """Dimensions (as torch's ``tensor.shape``); None means 1-D of length ``len(data)``."""

    @model_validator(mode="before")
    @classmethod
    def _accept_arrays(cls, values: Any) -> Any:
        """Accept a numpy array or torch tensor as ``data`` (its shape is used when none is given)."""
        if isinstance(values, dict):
            data = values.get("data")
            if isinstance(data, np.ndarray) or _is_torch_tensor(data):
                values = dict(values)
                if values.get("shape") is None:
                    values["shape"] = list(data.shape)
                if _is_torch_tensor(data):
                    data = data.detach().cpu()
                values["data"] = data.reshape(-1).tolist()
        return values

    @model_validator(mode="after")
    def _check_data(self) -> "TensorData":
        adapter = _INT_LIST if self.dtype == "int64" else _FLOAT_LIST
        try:
            data = adapter.validate_python(self.data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = "".join(f"[{i}]" for i in err["loc"])
            raise ValueError(
                f"data{where}: {err['msg']} for dtype {self.dtype} (got {err['input']!r})"
            ) from None
        object.__setattr__(self, "data", data)
        if self.shape is not None and math.prod(self.shape) != len(data):
            raise ValueError(
                f"shape {self.shape} holds {math.prod(self.shape)} elements but data has {len(data)}"
            )
        return self

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> "TensorData":
        """TensorData holding a copy of ``array`` (any shape; float -> float32, int/bool -> int64)."""
        array = np.asarray(array)
        return cls(
            data=array.reshape(-1).tolist(), dtype=dtype_of_numpy(array.dtype), shape=list(array.shape)
        )

    @classmethod
    def from_torch(cls, tensor: "torch.Tensor") -> "TensorData":
        """TensorData holding a copy of ``tensor`` (any shape or device).

        Floating dtypes (incl. bf16/fp16/fp64) give "float32"; integer and bool dtypes give "int64".
        """
        flat = tensor.detach().cpu().reshape(-1)
        return cls(data=flat.tolist(), dtype=dtype_of_torch(tensor.dtype), shape=list(tensor.shape))

    @classmethod
    def from_list(cls, values: Any, dtype: Optional[TensorDtype] = None) -> "TensorData":
        """TensorData from a (possibly nested, rectangular) list of numbers.

        ``dtype`` None infers it: all ints (or bools) -> "int64", otherwise "float32". The shape is that of
        the nested list.
        """
        try:
            array = np.asarray(values)
        except ValueError as exc:
            raise ValueError(f"values must be a rectangular nested list of numbers: {exc}") from None
        if array.dtype == object:
            raise ValueError("values must be a rectangular nested list of numbers")
        return cls(
            data=array.reshape(-1).tolist(),
            dtype=dtype or dtype_of_numpy(array.dtype),
            shape=list(array.shape),
        )

    @property
    def numel(self) -> int:
        """Number of elements, ``len(data)``."""
        return len(self.data)

    def _dims(self) -> List[int]:
        return list(self.shape) if self.shape is not None else [len(self.data)]

    def to_numpy(self) -> np.ndarray:
        """A new numpy array with this dtype (int64 / float32) and shape."""
        np_dtype = np.int64 if self.dtype == "int64" else np.float32
        return np.asarray(self.data, dtype=np_dtype).reshape(self._dims())

    def to_torch(self) -> "torch.Tensor":
        """A new CPU torch tensor with this dtype (torch.int64 / torch.float32) and shape."""
        import torch

        return torch.from_numpy(self.to_numpy())

    def tolist(self) -> List[Any]:
        """The elements as a nested Python list shaped like ``shape``."""
        return self.to_numpy().tolist()
