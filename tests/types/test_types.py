"""Tests of mint.types: defaults, validation (errors name the field), helpers, conversions, JSON."""

from __future__ import annotations

import inspect
import math
import typing
from datetime import datetime, timezone

import numpy as np
import pydantic
import pytest
import torch

from mint import types

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
T1 = datetime(2025, 1, 3, 3, 4, 5, tzinfo=timezone.utc)


def invalid(field: str, fn, *args, **kwargs) -> pydantic.ValidationError:
    """Call fn, expect a ValidationError whose location or message names `field`."""
    with pytest.raises(pydantic.ValidationError) as info:
        fn(*args, **kwargs)
    err = info.value
    locs = [".".join(str(p) for p in e["loc"]) for e in err.errors()]
    assert any(field in loc for loc in locs) or field in str(err), (field, str(err))
    return err


# ---------------------------------------------------------------- defaults


def test_adam_defaults_follow_docs():
    p = types.AdamParams()
    assert (p.learning_rate, p.beta1, p.beta2, p.eps) == (1e-4, 0.9, 0.95, 1e-12)
    assert (p.weight_decay, p.grad_clip_norm) == (0.0, 0.0)


def test_sampling_defaults_follow_docs():
    p = types.SamplingParams(max_tokens=5)
    assert (p.max_tokens, p.temperature, p.top_k, p.top_p) == (5, 1.0, -1, 1.0)
    assert p.seed is None and p.stop is None and p.stop_token_ids is None
    assert p.stop_strings() == [] and p.stop_tokens() == []


def test_lora_defaults_follow_docs():
    c = types.LoraConfig()
    assert (c.rank, c.seed, c.train_unembed, c.train_mlp, c.train_attn) == (32, None, True, True, True)
    assert types.LoraConfig(rank=1).rank == 1 and types.LoraConfig(rank=64).rank == 64


def test_loss_fn_type_names():
    names = {"cross_entropy", "importance_sampling", "ppo", "cispo", "dro"}
    assert set(typing.get_args(types.LossFnType)) == names


# ---------------------------------------------------------------- validation names the field


@pytest.mark.parametrize("rank", [0, 65, -1, 1000])
def test_lora_rank_out_of_range(rank):
    invalid("rank", types.LoraConfig, rank=rank)


def test_lora_needs_something_to_train():
    invalid("train_mlp", types.LoraConfig, train_unembed=False, train_mlp=False, train_attn=False)
    assert types.LoraConfig(train_unembed=False, train_mlp=False).train_attn


def test_sampling_requires_max_tokens():
    err = invalid("max_tokens", types.SamplingParams)
    assert err.errors()[0]["type"] == "missing"
    invalid("max_tokens", types.SamplingParams, max_tokens=0)


@pytest.mark.parametrize(
    "field,value",
    [("top_p", 0.0), ("top_p", 1.5), ("top_p", -0.1), ("temperature", -0.5), ("temperature", float("nan"))],
)
def test_sampling_bad_values(field, value):
    invalid(field, types.SamplingParams, max_tokens=4, **{field: value})


def test_sampling_bad_stops():
    invalid("stop_token_ids", types.SamplingParams, max_tokens=4, stop_token_ids=[2, -1])
    invalid("stop", types.SamplingParams, max_tokens=4, stop=[-3])
    invalid("stop", types.SamplingParams, max_tokens=4, stop=["a", 3])
    invalid("stop", types.SamplingParams, max_tokens=4, stop="")
    invalid("stop", types.SamplingParams, max_tokens=4, stop=["ok", ""])


def test_sampling_top_k_any_int_allowed():
    for k in (-1, 0, 1, 50, 2**30):
        assert types.SamplingParams(max_tokens=1, top_k=k).top_k == k


@pytest.mark.parametrize(
    "field,value",
    [
        ("learning_rate", -1e-3),
        ("learning_rate", float("nan")),
        ("beta1", 1.0),
        ("beta1", -0.1),
        ("beta2", 1.0),
        ("eps", 0.0),
        ("eps", -1e-8),
        ("weight_decay", -0.1),
        ("grad_clip_norm", -1.0),
    ],
)
def test_adam_bad_values(field, value):
    invalid(field, types.AdamParams, **{field: value})


def test_request_types_reject_unknown_fields():
    invalid("max_token", types.SamplingParams, max_tokens=3, max_token=4)
    invalid("lr", types.AdamParams, lr=1e-3)
    invalid("ranks", types.LoraConfig, ranks=3)


def test_response_types_ignore_unknown_fields():
    r = types.SaveWeightsResponse(path="mint://r/weights/a", new_server_field=1)
    assert r.path == "mint://r/weights/a"


def test_models_are_immutable():
    p = types.AdamParams()
    with pytest.raises(pydantic.ValidationError):
        p.learning_rate = 1.0  # type: ignore[misc]


def test_negative_token_id():
    invalid("tokens", types.ModelInput.from_ints, [1, -2, 3])
    invalid("tokens", types.EncodedTextChunk, tokens=[-1])
    invalid("tokens", types.ModelInput.from_ints([1]).append_tokens, [5, -1])
    invalid("tokens", types.ModelInput.from_ints([1]).append_int, -7)
    invalid("tokens", types.ModelInput.from_ints, [1.5])


def test_tensor_data_shape_mismatch():
    invalid("shape", types.TensorData, data=[1, 2, 3], dtype="int64", shape=[2, 2])
    invalid("shape", types.TensorData, data=[1.0], dtype="float32", shape=[-1])
    invalid("shape", types.TensorData, data=[], dtype="float32", shape=[1])


def test_tensor_data_bad_data_or_dtype():
    invalid("data", types.TensorData, data=[1, 2.5], dtype="int64")
    invalid("data", types.TensorData, data=[1.0, "x"], dtype="float32")
    invalid("data", types.TensorData, data="123", dtype="int64")
    invalid("dtype", types.TensorData, data=[1], dtype="float16")


# ---------------------------------------------------------------- ModelInput


def test_model_input_both_spellings():
    mi = types.ModelInput.from_ints([5, 6, 7])
    assert mi.to_ints() == [5, 6, 7]
    assert mi.length == mi.context_length() == 3

    a = mi.append_tokens([8, 9])
    b = mi.append(types.EncodedTextChunk(tokens=[8, 9]))
    c = mi.append_chunks([types.EncodedTextChunk(tokens=[8]), {"tokens": [9]}])
    d = mi.append_int(8).append_int(9)
    for m in (a, b, c, d):
        assert m.to_ints() == [5, 6, 7, 8, 9]
        assert m.length == m.context_length() == 5
    assert a == b  # one new chunk either way
    assert mi.to_ints() == [5, 6, 7]  # the original is unchanged


def test_model_input_empty_and_arrays():
    e = types.ModelInput.empty()
    assert e.chunks == [] and e.length == 0 and e.to_ints() == []
    assert e.append_int(3).to_ints() == [3]
    assert types.ModelInput.from_ints(np.array([1, 2], dtype=np.int32)).to_ints() == [1, 2]
    assert types.ModelInput.from_ints(torch.tensor([3, 4])).to_ints() == [3, 4]
    assert types.ModelInput.from_ints(()).length == 0
    chunk = types.EncodedTextChunk(tokens=[1, 2])
    assert chunk.length == 2 and chunk.type == "encoded_text"


# ---------------------------------------------------------------- TensorData


@pytest.mark.parametrize("shape", [(7,), (2, 3), (2, 1, 3), (0, 4), ()])
@pytest.mark.parametrize("kind", ["int64", "float32"])
def test_tensor_data_round_trips(shape, kind):
    rng = np.random.default_rng(0)
    if kind == "int64":
        arr = rng.integers(-1000, 50000, size=shape).astype(np.int64)
    else:
        arr = rng.standard_normal(size=shape).astype(np.float32)

    td = types.TensorData.from_numpy(arr)
    assert td.dtype == kind and td.shape == list(shape) and len(td.data) == arr.size
    out = td.to_numpy()
    assert out.dtype == arr.dtype and out.shape == arr.shape and np.array_equal(out, arr)

    t = torch.from_numpy(arr.copy())
    td_t = types.TensorData.from_torch(t)
    assert td_t == td
    back = td_t.to_torch()
    assert back.dtype == t.dtype and back.shape == t.shape and torch.equal(back, t)

    assert td.tolist() == arr.tolist()
    if arr.size:  # an empty nested list does not remember its inner dimensions
        assert types.TensorData.from_list(arr.tolist(), dtype=kind) == td
    assert types.TensorData.model_validate_json(td.model_dump_json()) == td
    assert types.TensorData.model_validate(td.model_dump()) == td


def test_tensor_data_dtype_mapping():
    assert types.TensorData.from_torch(torch.ones(2, dtype=torch.bfloat16)).dtype == "float32"
    assert types.TensorData.from_torch(torch.ones(2, dtype=torch.float64)).dtype == "float32"
    assert types.TensorData.from_torch(torch.ones(2, dtype=torch.int32)).dtype == "int64"
    assert types.TensorData.from_torch(torch.tensor([True, False])).data == [1, 0]
    assert types.TensorData.from_numpy(np.array([1, 2], dtype=np.uint8)).dtype == "int64"
    assert types.TensorData.from_list([[1, 2], [3, 4]]).shape == [2, 2]
    assert types.TensorData.from_list([1, 2.5]).dtype == "float32"
    with pytest.raises(ValueError):
        types.TensorData.from_numpy(np.array(["a"]))
    with pytest.raises(ValueError):
        types.TensorData.from_list([[1, 2], [3]])


def test_tensor_data_from_fields():
    td = types.TensorData(data=[1, 2, 3], dtype="float32")  # ints are accepted as floats
    assert td.data == [1.0, 2.0, 3.0] and all(isinstance(x, float) for x in td.data)
    assert td.shape is None and td.to_numpy().shape == (3,)
    assert types.TensorData(data=[2.0, 3.0], dtype="int64").data == [2, 3]
    grad = torch.ones(2, 3, requires_grad=True)
    td = types.TensorData(data=grad, dtype="float32")  # an array as data brings its shape
    assert td.shape == [2, 3] and td.to_torch().shape == (2, 3)


# ---------------------------------------------------------------- Datum


def test_datum_coercion_from_lists_numpy_torch():
    ref = types.Datum(
        model_input=types.ModelInput.from_ints([1, 2, 3]),
        loss_fn_inputs={
            "target_tokens": types.TensorData(data=[2, 3, 4], dtype="int64", shape=[3]),
            "weights": types.TensorData(data=[1.0, 1.0, 0.0], dtype="float32", shape=[3]),
        },
    )
    as_lists = types.Datum(
        model_input=[1, 2, 3], loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [1, 1, 0]}
    )
    as_numpy = types.Datum(
        model_input=np.array([1, 2, 3]),
        loss_fn_inputs={"target_tokens": np.array([2, 3, 4], np.int32), "weights": np.array([1.0, 1.0, 0.0])},
    )
    as_torch = types.Datum(
        model_input=torch.tensor([1, 2, 3]),
        loss_fn_inputs={"target_tokens": torch.tensor([2, 3, 4]), "weights": torch.tensor([1, 1, 0])},
    )
    assert as_lists == ref and as_numpy == ref and as_torch == ref
    assert types.Datum.model_validate_json(ref.model_dump_json()) == ref
    assert types.Datum.model_validate(ref.model_dump()) == ref


def test_datum_unknown_keys_infer_dtype():
    d = types.Datum(
        model_input=[1],
        loss_fn_inputs={
            "ints": [[1, 2], [3, 4]],
            "floats": [0.5, 1.5],
            "t16": torch.ones(2, 2, dtype=torch.float16),
            "mask": np.array([True, False]),
        },
    )
    lfi = d.loss_fn_inputs
    assert (lfi["ints"].dtype, lfi["ints"].shape) == ("int64", [2, 2])
    assert lfi["floats"].dtype == "float32"
    assert (lfi["t16"].dtype, lfi["t16"].shape) == ("float32", [2, 2])
    assert lfi["mask"].data == [1, 0] and lfi["mask"].dtype == "int64"
    assert types.Datum(model_input=[1]).loss_fn_inputs == {}


def test_datum_errors_name_the_key():
    invalid("odd", types.Datum, model_input=[1], loss_fn_inputs={"odd": [[1, 2], [3]]})
    invalid("name", types.Datum, model_input=[1], loss_fn_inputs={"name": ["a", "b"]})
    invalid("target_tokens", types.Datum, model_input=[1], loss_fn_inputs={"target_tokens": [1.5]})
    invalid("model_input", types.Datum, model_input=[1, -2], loss_fn_inputs={})
    invalid("model_input", types.Datum, loss_fn_inputs={})


def test_forward_backward_output_coerces_and_round_trips():
    out = types.ForwardBackwardOutput(
        loss_fn_output_type="TorchLossReturn",
        loss_fn_outputs=[
            {"logprobs": torch.tensor([-0.5, -float("inf")])},
            {"logprobs": np.zeros(1, np.float32)},
        ],
        metrics={"loss:sum": 1.25, "nan_metric": float("nan")},
    )
    lp = out.loss_fn_outputs[0]["logprobs"]
    assert lp.dtype == "float32" and lp.data[1] == -math.inf
    back = types.ForwardBackwardOutput.model_validate_json(out.model_dump_json())
    assert back.loss_fn_outputs == out.loss_fn_outputs
    assert back.metrics["loss:sum"] == 1.25 and math.isnan(back.metrics["nan_metric"])
    assert types.OptimStepResponse().metrics is None
    assert types.OptimStepResponse(metrics={"grad_norm": 0.5}).metrics == {"grad_norm": 0.5}


# ---------------------------------------------------------------- SamplingParams stop merging


@pytest.mark.parametrize(
    "kwargs,strings,tokens",
    [
        (dict(stop="\n\n"), ["\n\n"], []),
        (dict(stop=["a", "b", "a"]), ["a", "b"], []),
        (dict(stop=[2, 7]), [], [2, 7]),
        (dict(stop_token_ids=[2]), [], [2]),
        (dict(stop=[2, 7], stop_token_ids=[7, 9]), [], [2, 7, 9]),
        (dict(stop=["END"], stop_token_ids=[0, 2]), ["END"], [0, 2]),
        (dict(stop="END", stop_token_ids=[2]), ["END"], [2]),
        (dict(stop=[]), [], []),
        (dict(stop=("x", "y")), ["x", "y"], []),
    ],
)
def test_sampling_stop_merging(kwargs, strings, tokens):
    p = types.SamplingParams(max_tokens=8, **kwargs)
    assert p.stop_strings() == strings
    assert p.stop_tokens() == tokens
    assert types.SamplingParams.model_validate_json(p.model_dump_json()) == p


# ---------------------------------------------------------------- checkpoints and runs


def test_checkpoint_both_spellings():
    mint_style = types.Checkpoint(
        id="weights/step-1",
        type="training",
        timestamp=T0,
        size=123,
        public=True,
        path="mint://run-7/weights/step-1",
    )
    tinker_style = types.Checkpoint(
        checkpoint_id="weights/step-1",
        checkpoint_type="training",
        time=T0.isoformat(),
        size_bytes=123,
        public=True,
        tinker_path="mint://run-7/weights/step-1",
    )
    assert mint_style == tinker_style
    c = tinker_style
    assert c.id == c.checkpoint_id == "weights/step-1"
    assert c.type == c.checkpoint_type == "training"
    assert c.timestamp == c.time == T0
    assert c.size == c.size_bytes == 123
    assert c.path == c.tinker_path == "mint://run-7/weights/step-1"
    assert c.training_run_id == "run-7"  # taken from the path
    assert types.Checkpoint.model_validate_json(c.model_dump_json()) == c
    invalid("size", types.Checkpoint, id="x", type="sampler", timestamp=T0, size=-1)
    invalid("type", types.Checkpoint, id="x", type="final", timestamp=T0)
    invalid("id", types.Checkpoint, type="sampler", timestamp=T0)


def test_training_run_both_spellings_and_last_checkpoint():
    ck = [
        types.Checkpoint(id="weights/a", type="training", timestamp=T0, path="mint://r/weights/a"),
        types.Checkpoint(id="weights/b", type="training", timestamp=T1, path="mint://r/weights/b"),
        types.Checkpoint(
            id="sampler_weights/s", type="sampler", timestamp=T0, path="mint://r/sampler_weights/s"
        ),
    ]
    run = types.TrainingRun(
        id="r", base_model="m", owner="alice", checkpoints=ck, created_at=T0, lora_rank=16
    )
    tinker = types.TrainingRun.model_validate(
        {
            "training_run_id": "r",
            "base_model": "m",
            "model_owner": "alice",
            "checkpoints": [c.model_dump() for c in ck],
            "created_at": T0.isoformat(),
            "lora_rank": 16,
            "is_lora": True,
        }
    )
    assert run == tinker
    assert run.id == run.training_run_id == "r" and run.owner == run.model_owner == "alice"
    assert run.is_lora and not run.corrupted and run.lora_rank == 16
    assert run.last_checkpoint.id == "weights/b"
    assert run.last_sampler_checkpoint.id == "sampler_weights/s"
    assert types.TrainingRun.model_validate_json(run.model_dump_json()) == run
    bare = types.TrainingRun(id="r", base_model="m", owner="bob")
    assert bare.checkpoints == [] and bare.last_checkpoint is None and bare.created_at is None
    invalid("owner", types.TrainingRun, id="r", base_model="m")
    cursor = {"offset": 0, "limit": 10, "total_count": 1}
    lists = types.TrainingRunsResponse(training_runs=[run], cursor=cursor)
    assert types.TrainingRunsResponse.model_validate_json(lists.model_dump_json()) == lists
    assert types.CheckpointsListResponse(checkpoints=ck).checkpoints[2].type == "sampler"


def test_parsed_checkpoint_path():
    p = types.ParsedCheckpointPath.from_path("mint://run-1/sampler_weights/final")
    assert (p.training_run_id, p.checkpoint_type) == ("run-1", "sampler")
    assert p.checkpoint_id == "sampler_weights/final"
    t = types.ParsedCheckpointTinkerPath.from_tinker_path("tinker://run-2/weights/0001")
    assert (t.training_run_id, t.checkpoint_type) == ("run-2", "training")
    assert t.tinker_path == t.path == "tinker://run-2/weights/0001"
    bad_paths = [
        "run/weights/a",
        "mint://run/weights",
        "mint://run/other/a",
        "mint://run/weights/a/b",
        "mint:///weights/a",
    ]
    for bad in bad_paths:
        with pytest.raises(ValueError):
            types.ParsedCheckpointPath.from_path(bad)


# ---------------------------------------------------------------- responses and JSON round trips


def _instances():
    seq = types.SampledSequence(stop_reason="stop", tokens=[4, 2], logprobs=[-0.1, -2.0])
    return [
        types.AdamParams(learning_rate=3e-4, weight_decay=0.01, grad_clip_norm=1.0),
        types.SamplingParams(max_tokens=16, temperature=0.0, top_k=40, top_p=0.9, seed=3, stop=["x"]),
        types.LoraConfig(rank=8, seed=1, train_unembed=False),
        types.ModelInput.from_ints([1, 2]).append_int(3),
        types.TensorData(data=[1.5, -2.0], dtype="float32", shape=[1, 2]),
        types.SampleResponse(
            sequences=[seq, types.SampledSequence(stop_reason="length", tokens=[])],
            prompt_logprobs=[None, -1.5, -math.inf],
            topk_prompt_logprobs=[None, [(3, -0.5), (9, -1.0)]],
        ),
        types.GetServerCapabilitiesResponse(
            supported_models=[{"model_name": "HuggingFaceTB/SmolLM2-135M-Instruct"}]
        ),
        types.GetInfoResponse(
            model_id="m-1",
            model_data=types.ModelData(arch="LlamaForCausalLM", model_name="smol", tokenizer_id="smol"),
            is_lora=True,
            lora_rank=32,
            model_name="smol",
        ),
        types.SaveWeightsForSamplerResponse(path="mint://r/sampler_weights/a"),
        types.SaveWeightsResponse(path="mint://r/weights/a"),
        types.LoadWeightsResponse(path="mint://r/weights/a"),
        types.OptimStepResponse(metrics={"grad_norm": 2.0}),
    ]


@pytest.mark.parametrize("obj", _instances(), ids=lambda o: type(o).__name__)
def test_json_round_trip(obj):
    cls = type(obj)
    assert cls.model_validate_json(obj.model_dump_json()) == obj
    assert cls.model_validate(obj.model_dump()) == obj
    assert cls.model_validate(obj.model_dump(mode="json")) == obj


def test_sample_response_values():
    r = _instances()[5]
    assert r.type == "sample" and r.sequences[1].logprobs is None
    assert r.topk_prompt_logprobs[1][0] == (3, -0.5)
    invalid("stop_reason", types.SampledSequence, stop_reason="eos", tokens=[])


def test_every_public_type_and_method_is_documented():
    missing = []
    for name in types.__all__:
        obj = getattr(types, name)
        if not (inspect.isclass(obj) and issubclass(obj, pydantic.BaseModel)):
            continue
        if not inspect.getdoc(obj) or obj.__doc__ is None:
            missing.append(name)
        for attr, member in vars(obj).items():
            if attr.startswith("_"):
                continue
            func = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
            if callable(func) and not func.__doc__:
                missing.append(f"{name}.{attr}")
        for field_name, field in obj.model_fields.items():
            if not field.description:
                missing.append(f"{name}.{field_name} (field)")
    assert not missing, missing
