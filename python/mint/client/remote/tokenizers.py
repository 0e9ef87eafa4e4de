"""Tokenizers for remote clients: the server names the tokenizer; it is loaded on this machine, once."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=16)
def load_tokenizer(tokenizer_id: str):
    """The Hugging Face tokenizer named ``tokenizer_id`` (a base model name or folder, as the server reports it).

    mint's own resolution is tried first (embedded base models, local folders, the Hugging Face cache,
    offline), then ``transformers.AutoTokenizer.from_pretrained`` (which may download). Cached per id.
    """
    from transformers import AutoTokenizer

    from mint.engine.models import resolve_model_source
    from mint.errors import BadRequestError, NotFoundError

    try:
        source = resolve_model_source(tokenizer_id)
    except (BadRequestError, NotFoundError):
        return AutoTokenizer.from_pretrained(tokenizer_id)
    return AutoTokenizer.from_pretrained(source, local_files_only=True)
