"""Checking training data and packing it into padded tensors for one forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mint import types
from mint.engine.losses import LossSpec
from mint.errors import BadRequestError


@dataclass
class PackedBatch:
    """Data of one forward pass: input_ids / attention_mask / mask [B, L] and the loss inputs [B, L].

    ``lengths[i]`` is datum i's token count; padding sits on the right and is masked out.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mask: torch.Tensor
    inputs: dict[str, torch.Tensor]
    lengths: list[int]


def check_tokens(tokens: list[int], vocab_size: int, max_context: int, field: str) -> None:
    """Raise BadRequestError naming ``field`` if ``tokens`` is empty, too long or holds ids outside the vocabulary."""
    if len(tokens) == 0:
        raise BadRequestError("has no tokens", field=field)
    if len(tokens) > max_context:
        raise BadRequestError(f"has {len(tokens)} tokens, more than the model's context of {max_context}", field=field)
    lo, hi = min(tokens), max(tokens)
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise BadRequestError(f"token id {bad} is outside the vocabulary [0, {vocab_size})", field=field)


def as_datums(data: object) -> list[types.Datum]:
    """``data`` as a non-empty list of Datum (dicts are validated); BadRequestError naming ``data[i]``."""
    if not isinstance(data, (list, tuple)) or len(data) == 0:
        raise BadRequestError("must be a non-empty list of Datum", field="data")
    out = []
    for i, datum in enumerate(data):
        if not isinstance(datum, types.Datum):
            try:
                datum = types.Datum.model_validate(datum)
            except Exception as exc:  # noqa: BLE001
                raise BadRequestError(f"is not a valid Datum: {exc}", field=f"data[{i}]") from exc
        out.append(datum)
    return out


def pack(
    data: list[types.Datum], spec: LossSpec, vocab_size: int, max_context: int, extra_keys: bool = False
) -> PackedBatch:
    """Validate every datum against ``spec`` and pad the batch. Raises BadRequestError naming ``data[i].<key>``.

    With ``extra_keys`` (custom losses), keys outside the spec are allowed and left out of the packed inputs.
    """
    rows: list[list[int]] = []
    row_inputs: list[dict[str, torch.Tensor]] = []
    for i, datum in enumerate(as_datums(data)):
        tokens = datum.model_input.to_ints()
        check_tokens(tokens, vocab_size, max_context, f"data[{i}].model_input")
        given = datum.loss_fn_inputs
        for key in spec.required:
            if key not in given:
                raise BadRequestError("is required by this loss function", field=f"data[{i}].loss_fn_inputs.{key}")
        known = set(spec.required) | set(spec.optional)
        unknown = set(given) - known
        if unknown and not extra_keys:
            raise BadRequestError(
                f"unknown key(s) {sorted(unknown)}; this loss takes {sorted(spec.required) + sorted(spec.optional)}",
                field=f"data[{i}].loss_fn_inputs",
            )
        converted = {}
        for key, value in given.items():
            if key not in known:
                continue
            tensor = value.to_torch().reshape(-1)
            if tensor.numel() != len(tokens):
                raise BadRequestError(
                    f"has {tensor.numel()} values but model_input has {len(tokens)} tokens",
                    field=f"data[{i}].loss_fn_inputs.{key}",
                )
            dtype = (spec.required | spec.optional)[key]
            if dtype == "int64":
                if tensor.is_floating_point():
                    raise BadRequestError("must hold integer token ids", field=f"data[{i}].loss_fn_inputs.{key}")
                tensor = tensor.to(torch.int64)
                if key == "target_tokens":
                    check_tokens(tensor.tolist(), vocab_size, max_context, f"data[{i}].loss_fn_inputs.{key}")
            else:
                tensor = tensor.to(torch.float32)
                if not bool(torch.isfinite(tensor).all()):
                    raise BadRequestError("holds NaN or infinite values", field=f"data[{i}].loss_fn_inputs.{key}")
            converted[key] = tensor
        rows.append(tokens)
        row_inputs.append(converted)
    lengths = [len(r) for r in rows]
    batch, width = len(rows), max(lengths)
    input_ids = torch.zeros(batch, width, dtype=torch.int64)
    mask = torch.zeros(batch, width, dtype=torch.bool)
    for i, row in enumerate(rows):
        input_ids[i, : lengths[i]] = torch.tensor(row, dtype=torch.int64)
        mask[i, : lengths[i]] = True
    inputs: dict[str, torch.Tensor] = {}
    for key in {k for r in row_inputs for k in r}:
        dtype = torch.int64 if (spec.required | spec.optional)[key] == "int64" else torch.float32
        padded = torch.zeros(batch, width, dtype=dtype)
        for i, r in enumerate(row_inputs):
            if key in r:
                padded[i, : lengths[i]] = r[key]
            elif key in spec.optional and dtype == torch.float32:
                padded[i, : lengths[i]] = 1.0
        inputs[key] = padded
    return PackedBatch(input_ids, mask.to(torch.int64), mask, inputs, lengths)
