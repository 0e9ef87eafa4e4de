"""Training data: one Datum per sequence, the loss function names, and the forward/backward result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, List, Literal

import numpy as np
from pydantic import Field, model_validator
from typing_extensions import TypeAlias

from mint.types._base import RequestModel, ResponseModel
from mint.types.model_input import ModelInput
from mint.types.tensor_data import TensorData, TensorDtype, _is_torch_tensor, dtype_of_numpy, dtype_of_torch

__all__ = [
    "Datum",
    "ForwardBackwardOutput",
    "LossFnInputs",
    "LossFnOutput",
    "LossFnType",
    "coerce_tensor_data",
]

LossFnType: TypeAlias = Literal["cross_entropy", "importance_sampling", "ppo", "cispo", "dro"]
"""Names of the built-in loss functions of ``forward_backward``."""

LossFnInputs: TypeAlias = Dict[str, TensorData]
"""Per-datum loss inputs by name (``target_tokens``, ``weights``, ``advantages``, ``logprobs``, ...)."""

LossFnOutput: TypeAlias = Dict[str, TensorData]
"""Per-datum loss outputs by name (e.g. ``logprobs``, ``elementwise_loss``)."""

# Inputs the built-in losses read, with the dtype they need whatever the caller passed.
KNOWN_INPUT_DTYPES: Dict[str, TensorDtype] = {
    "target_tokens": "int64",
    "weights": "float32",
    "advantages": "float32",
    "logprobs": "float32",
    "clip_low_threshold": "float32",
    "clip_high_threshold": "float32",
}


def coerce_tensor_data(key: str, value: Any) -> Any:
    """Turn a list, tuple, number, numpy array or torch tensor into TensorData fields (a dict).

    The dtype is the one in ``KNOWN_INPUT_DTYPES`` for a known ``key``; otherwise ints and bools give
    "int64" and floats "float32". TensorData instances and dicts are returned unchanged (pydantic
    validates them). Raises ValueError naming ``key`` for ragged or non-numeric values.
    """
    if isinstance(value, (TensorData, Mapping)):
        return value
    if _is_torch_tensor(value):
        flat = value.detach().cpu().reshape(-1)
        inferred = dtype_of_torch(value.dtype)
        data, shape = flat.tolist(), list(value.shape)
    else:
        if isinstance(value, np.ndarray):
            array = value
        else:
            try:
                array = np.asarray(value)
            except (ValueError, TypeError):
                array = None
            if array is None or array.dtype == object:
                raise ValueError(f"{key}: must be a rectangular array of numbers (ragged or mixed value)")
        try:
            inferred = dtype_of_numpy(array.dtype)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
        data, shape = array.reshape(-1).tolist(), list(array.shape)
    return {"data": data, "dtype": KNOWN_INPUT_DTYPES.get(key, inferred), "shape": shape}


def _coerce_mapping(mapping: Any) -> Any:
    if not isinstance(mapping, Mapping):
        return mapping
    return {key: coerce_tensor_data(str(key), value) for key, value in mapping.items()}


class Datum(RequestModel):
    """One training example: the model input and the named inputs of the loss function.

    Conveniences on construction: ``model_input`` may be a list (or 1-D array/tensor) of token ids,
    and each ``loss_fn_inputs`` value may be a list, numpy array or torch tensor; they become
    ``ModelInput.from_ints(...)`` and ``TensorData`` (see ``coerce_tensor_data`` for dtypes).

    Example::

        types.Datum(
            model_input=types.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights[1:]},
        )
    """

    model_input: ModelInput
    """The tokens the model reads."""

    loss_fn_inputs: LossFnInputs = Field(default_factory=dict)
    """Named per-position loss inputs, e.g. ``target_tokens`` (int64) and ``weights`` (float32)."""

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, values: Any) -> Any:
        """Accept token lists for ``model_input`` and arrays/lists for ``loss_fn_inputs`` values."""
        if not isinstance(values, Mapping):
            return values
        values = dict(values)
        model_input = values.get("model_input")
        if model_input is not None and not isinstance(model_input, (ModelInput, Mapping)):
            if hasattr(model_input, "tolist") and hasattr(model_input, "shape"):
                model_input = model_input.reshape(-1).tolist()
            values["model_input"] = {"chunks": [{"tokens": model_input}]}
        if "loss_fn_inputs" in values:
            values["loss_fn_inputs"] = _coerce_mapping(values["loss_fn_inputs"])
        return values


class ForwardBackwardOutput(ResponseModel):
    """Result of ``forward`` / ``forward_backward`` over a batch of Datum.

    ``loss_fn_outputs[i]`` belongs to datum ``i`` (e.g. ``{"logprobs": TensorData}``); values may be
    given as arrays or tensors and are converted like Datum's ``loss_fn_inputs``.
    """

    loss_fn_output_type: str
    """Name of the kind of records in ``loss_fn_outputs`` (e.g. "TorchLossReturn")."""

    loss_fn_outputs: List[LossFnOutput]
    """One dict of named output tensors per datum, in batch order."""

    metrics: Dict[str, float]
    """Scalar metrics of the pass, e.g. ``{"loss:sum": 12.3}``."""

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, values: Any) -> Any:
        """Accept arrays/tensors as the values of each ``loss_fn_outputs`` dict."""
        if isinstance(values, Mapping) and isinstance(values.get("loss_fn_outputs"), (list, tuple)):
            values = dict(values)
            values["loss_fn_outputs"] = [_coerce_mapping(m) for m in values["loss_fn_outputs"]]
        return values
