"""mint:// paths, checkpoint names and the atomic adapter files."""

from __future__ import annotations

import pytest
import torch

from mint import storage
from mint.engine.adapter_files import (
    CheckpointPath,
    check_name,
    load_adapter,
    load_training_state,
    parse_path,
    read_metadata,
    save_adapter,
    save_training_state,
)
from mint.engine.adapter_pool import AdapterSpec
from mint.errors import BadRequestError, NotFoundError


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "a..b", "x" * 200, "a b"])
def test_bad_names(name):
    with pytest.raises(BadRequestError, match="name"):
        check_name(name)


def test_parse_paths():
    p = parse_path("mint://run1/sampler_weights/step-10")
    assert (p.run_id, p.kind, p.name) == ("run1", "sampler_weights", "step-10")
    assert str(parse_path("tinker://run1/weights/final")) == "mint://run1/weights/final"
    for bad in ("mint://run1/other/x", "http://x/y/z", "mint://../sampler_weights/x", "mint://r/weights/a/b"):
        with pytest.raises(BadRequestError, match="model_path"):
            parse_path(bad)


def test_save_and_load_round_trip(mint_home):
    path = CheckpointPath("runx", "sampler_weights", "ckpt")
    tensors = {"layer.lora_a": torch.randn(2, 5), "layer.lora_b": torch.randn(2, 3)}
    spec = AdapterSpec(rank=2, kinds=frozenset({"mlp", "attn"}))
    size = save_adapter(path, tensors, spec, "base/model")
    assert size > 0 and path.folder.is_relative_to(mint_home)
    loaded, spec2, base = load_adapter(path)
    assert base == "base/model" and spec2 == spec
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert read_metadata(path)["rank"] == "2"
    files = [p.name for p in path.folder.iterdir()]
    assert len(files) == 1 and files[0].endswith(".safetensors")  # one file, no temporary files left
    # Registered in the metadata store as a sampler checkpoint of its run.
    (row,) = storage.store().list_checkpoints("runx")
    assert (row.kind, row.name, row.size) == ("sampler_weights", "ckpt", size)
    with pytest.raises(NotFoundError):
        load_adapter(CheckpointPath("runx", "sampler_weights", "missing"))


def test_training_state_round_trip(mint_home):
    path = CheckpointPath("runy", "weights", "state")
    weights = {"layer.lora_a": torch.randn(2, 5), "layer.lora_b": torch.randn(2, 3)}
    optim = {"steps": torch.tensor([3, 3], dtype=torch.int64), "exp_avg/layer.lora_a": torch.randn(2, 5)}
    spec = AdapterSpec(rank=2, kinds=frozenset({"attn"}))
    save_training_state(path, weights, optim, spec, "base/model")
    w, o, spec2, base = load_training_state(path)
    assert spec2 == spec and base == "base/model" and set(w) == set(weights) and set(o) == set(optim)
    assert all(torch.equal(w[k], weights[k]) for k in w) and all(torch.equal(o[k], optim[k]) for k in o)
    assert o["steps"].dtype == torch.int64
    loaded, _, _ = load_adapter(path)  # weights only
    assert set(loaded) == set(weights)
    sampler = CheckpointPath("runy", "sampler_weights", "w")
    save_adapter(sampler, weights, spec, "base/model")
    with pytest.raises(BadRequestError, match="no optimizer state"):
        load_training_state(sampler)
