"""Resolving base model names offline."""

from __future__ import annotations

import pytest

from mint.engine.models import DEFAULT_BASE_MODEL, canonical_name, load_base_model, resolve_model_source
from mint.errors import BadRequestError


def test_local_folder_and_errors(tiny_llama, tmp_path):
    assert resolve_model_source(tiny_llama) == tiny_llama
    with pytest.raises(BadRequestError, match="base_model"):
        resolve_model_source(str(tmp_path))  # a folder without config.json
    with pytest.raises(BadRequestError, match="base_model"):
        resolve_model_source("")
    with pytest.raises(BadRequestError, match="base_model"):
        resolve_model_source("nobody/nothing-like-this")


def test_aliases():
    assert canonical_name("smollm2") == DEFAULT_BASE_MODEL
    assert canonical_name("some/other") == "some/other"


def test_loaded_model_is_frozen(tiny_qwen3):
    loaded = load_base_model(tiny_qwen3)
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert not loaded.model.training
