"""Wire formats of the Tinker protocol that are not plain JSON.

The Tinker SDK sends ``forward_backward`` as a protobuf ``ForwardBackwardRequest`` (optionally zstd
compressed) and asks for ``SampleResponse`` / ``ForwardBackwardOutput`` results as protobuf
(``Accept: application/x-protobuf``). The message schema is the SDK's own generated module
(``tinker.proto.tinker_public_pb2``, from the pinned ``tinker`` package); this module converts between it
and mint's types. Clients that send JSON (``Content-Type: application/json``) and do not ask for protobuf
get JSON of mint's types instead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mint import types
from mint.errors import BadRequestError

PROTO_CONTENT_TYPE = "application/x-protobuf"


def _pb():
    try:
        from tinker.proto import tinker_public_pb2
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise BadRequestError(
            "this server cannot read protobuf requests: install the pinned Tinker SDK (pip install 'mint-lora[server]')",
            field="content-type",
        ) from exc
    return tinker_public_pb2


def proto_available() -> bool:
    """Whether the Tinker SDK's protobuf schema can be imported."""
    try:
        _pb()
    except BadRequestError:
        return False
    return True


_DTYPES = {1: ("float32", np.float32), 2: ("int64", np.int64), 3: ("int64", np.int32)}


def _tensor(msg, field: str) -> types.TensorData:
    if msg.dtype not in _DTYPES:
        raise BadRequestError(f"unsupported tensor dtype {msg.dtype}", field=field)
    if msg.HasField("sparse_csr"):
        raise BadRequestError("sparse tensors are not supported", field=field)
    name, np_dtype = _DTYPES[msg.dtype]
    width = np.dtype(np_dtype).itemsize
    if len(msg.dense) % width:
        raise BadRequestError(f"{len(msg.dense)} bytes is not a whole number of {name} values", field=field)
    values = np.frombuffer(msg.dense, dtype=np_dtype)
    shape = list(msg.shape) or None
    try:
        return types.TensorData(data=values.astype(np.int64 if name == "int64" else np.float32).tolist(), dtype=name, shape=shape)
    except ValueError as exc:
        raise BadRequestError(str(exc).splitlines()[0], field=field) from exc


def decode_forward_backward(body: bytes) -> dict[str, Any]:
    """A protobuf ``ForwardBackwardRequest`` as ``{model_id, seq_id, forward_only, loss_fn, loss_fn_config,
    data: [types.Datum]}``. BadRequestError naming the field for anything malformed or unsupported."""
    pb = _pb()
    msg = pb.ForwardBackwardRequest()
    try:
        msg.ParseFromString(body)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise BadRequestError(f"not a ForwardBackwardRequest message ({exc})", field="body") from exc
    data = []
    for i, datum in enumerate(msg.data):
        tokens: list[int] = []
        for j, chunk in enumerate(datum.model_input):
            kind = chunk.WhichOneof("chunk")
            if kind != "encoded_text":
                raise BadRequestError(f"only token chunks are supported, not {kind!r}", field=f"data[{i}].model_input.chunks[{j}]")
            raw = chunk.encoded_text.tokens
            if len(raw) % 4:
                raise BadRequestError("token bytes are not int32 values", field=f"data[{i}].model_input.chunks[{j}]")
            tokens.extend(np.frombuffer(raw, dtype=np.int32).tolist())
        inputs = {name: _tensor(t, f"data[{i}].loss_fn_inputs.{name}") for name, t in datum.loss_fn_inputs.items()}
        try:
            data.append(types.Datum(model_input=types.ModelInput.from_ints(tokens), loss_fn_inputs=inputs))
        except ValueError as exc:
            raise BadRequestError(str(exc).splitlines()[0], field=f"data[{i}]") from exc
    config: dict[str, float] = {k: float(v) for k, v in msg.loss_fn_config.items()}
    for k, v in msg.loss_fn_config_v2.items():
        if v.WhichOneof("value") != "number":
            raise BadRequestError("must be a number", field=f"loss_fn_config.{k}")
        config[k] = float(v.number)
    return {
        "model_id": msg.model_id,
        "seq_id": msg.seq_id,
        "forward_only": bool(msg.forward_only),
        "loss_fn": msg.loss_fn,
        "loss_fn_config": config or None,
        "data": data,
    }


def encode_forward_backward_output(out: types.ForwardBackwardOutput) -> bytes:
    """``out`` as a protobuf ``ForwardBackwardOutput``: one ArrayRecord whose fields are BatchedTensors
    (per-datum values concatenated, with byte offsets)."""
    pb = _pb()
    msg = pb.ForwardBackwardOutput(loss_fn_output_type=out.loss_fn_output_type)
    for k, v in out.metrics.items():
        msg.metrics[k] = float(v)
    outputs = out.loss_fn_outputs
    record = msg.loss_fn_outputs.add(type_tag=out.loss_fn_output_type, num_datums=len(outputs))
    names = list(outputs[0].keys()) if outputs else []
    for name in names:
        arrays = []
        for o in outputs:
            td = o[name]
            arrays.append(np.asarray(td.data, dtype=np.float32 if td.dtype == "float32" else np.int64).reshape(-1))
        dtype = outputs[0][name].dtype
        trailing = list(outputs[0][name].shape or [])[1:]
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([a.nbytes for a in arrays])
        bt = record.fields[name]
        bt.data = b"".join(a.tobytes() for a in arrays)
        bt.offsets = offsets.tobytes()
        bt.dtype = pb.DTYPE_FLOAT32 if dtype == "float32" else pb.DTYPE_INT64
        bt.trailing_shape.extend(trailing)
    return msg.SerializeToString()


def encode_sample_response(out: types.SampleResponse) -> bytes:
    """``out`` as a protobuf ``SampleResponse`` (tokens int32, log-probs float32, NaN for missing)."""
    pb = _pb()
    msg = pb.SampleResponse()
    for seq in out.sequences:
        s = msg.sequences.add(
            stop_reason=pb.STOP_REASON_STOP if seq.stop_reason == "stop" else pb.STOP_REASON_LENGTH,
            tokens=np.asarray(seq.tokens, dtype=np.int32).tobytes(),
        )
        if seq.logprobs is not None:
            s.logprobs = np.asarray(seq.logprobs, dtype=np.float32).tobytes()
    if out.prompt_logprobs is not None:
        msg.prompt_logprobs = np.asarray(
            [math.nan if v is None else v for v in out.prompt_logprobs], dtype=np.float32
        ).tobytes()
    if out.topk_prompt_logprobs is not None:
        rows = out.topk_prompt_logprobs
        k = max((len(r) for r in rows if r), default=0)
        ids = np.zeros((len(rows), k), dtype=np.int32)
        lps = np.full((len(rows), k), -99999.0, dtype=np.float32)
        for i, row in enumerate(rows):
            for j, (tok, lp) in enumerate(row or []):
                ids[i, j], lps[i, j] = tok, lp
        msg.topk_prompt_logprobs.CopyFrom(
            pb.TopkLogprobs(token_ids=ids.tobytes(), logprobs=lps.tobytes(), k=k, length=len(rows))
        )
    return msg.SerializeToString()
