"""mint:// paths, checkpoint names and the atomic adapter files."""

from __future__ import annotations

import pytest
import torch

from mint.engine.adapter_files import CheckpointPath, check_name, load_adapter, parse_path, read_metadata, save_adapter
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
    assert [p.name for p in path.folder.iterdir()] == ["adapter.safetensors"]  # no temporary files left
    with pytest.raises(NotFoundError):
        load_adapter(CheckpointPath("runx", "sampler_weights", "missing"))
