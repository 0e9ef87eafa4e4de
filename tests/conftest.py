"""Shared fixtures: an isolated MINT_HOME and tiny random models (no downloads, seconds to build)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def mint_home(tmp_path_factory):
    """Every test session writes checkpoints and converted models under a fresh temporary MINT_HOME."""
    home = tmp_path_factory.mktemp("mint_home")
    old = os.environ.get("MINT_HOME")
    os.environ["MINT_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("MINT_HOME", None)
    else:
        os.environ["MINT_HOME"] = old


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    """Path of a tiny random Llama model folder with a byte-level tokenizer."""
    from mint.testing import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny_llama")))


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> str:
    """Path of a tiny random Qwen3 model folder."""
    from mint.testing import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny_qwen3"), arch="qwen3", seed=1))
