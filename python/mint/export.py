"""Export sampler checkpoints for serving engines: a PEFT LoRA adapter folder, or a merged full model.

mint stores, per LoRA layer (Hugging Face module name ``m``), ``m.lora_a`` [r, in] and ``m.lora_b`` [r, out]
(rank-major) and applies ``y = base(x) + (alpha / r) * (x @ A^T) @ B``. PEFT stores ``lora_A.weight`` [r, in]
and ``lora_B.weight`` [out, r] and applies ``lora_B(lora_A(x)) * lora_alpha / r``: so ``lora_B.weight`` is
mint's ``lora_b`` transposed and ``lora_alpha`` is mint's alpha (32). The unembedding is ``lm_head``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from mint.engine.adapter_files import load_adapter, parse_path
from mint.engine.adapter_pool import AdapterSpec
from mint.errors import BadRequestError

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


def _modules(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module: (A [r, in], B [r, out])}`` from mint's ``<module>.lora_a`` / ``<module>.lora_b`` keys."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in tensors:
        if key.endswith(".lora_a"):
            module = key[: -len(".lora_a")]
            out[module] = (tensors[key], tensors[f"{module}.lora_b"])
    return out


def _load(path: str) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], AdapterSpec, str]:
    tensors, spec, base = load_adapter(parse_path(path, field="path"))
    return _modules(tensors), spec, base


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move the finished files of ``tmp`` into ``out_dir`` (created if needed), each with an atomic rename."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in tmp.iterdir():
        target = out_dir / entry.name
        if target.is_dir() and not entry.is_dir():
            raise BadRequestError(f"{target} is a folder", field="out_dir")
        os.replace(entry, target)


def to_peft(path: str, out_dir: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Write the checkpoint at ``path`` (sampler or training state; weights only) as a PEFT LoRA adapter:
    ``out_dir/adapter_config.json`` and ``out_dir/adapter_model.safetensors`` (fp32; keys
    ``base_model.model.<module>.lora_A.weight`` [r, in] and ``...lora_B.weight`` [out, r]).

    ``peft.PeftModel.from_pretrained(base, out_dir)`` then computes the same logits as mint on the same base
    model. ``base_model_name_or_path`` defaults to the base model recorded in the checkpoint. Returns out_dir.
    """
    modules, spec, base = _load(path)
    weights = {}
    for module, (a, b) in modules.items():
        weights[f"base_model.model.{module}.lora_A.weight"] = a.float().contiguous()
        weights[f"base_model.model.{module}.lora_B.weight"] = b.float().t().contiguous()
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path or base,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": 0.0,
        "target_modules": sorted(modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mint-export-", dir=out.parent))
    try:
        save_file(weights, str(tmp / PEFT_WEIGHTS), metadata={"format": "pt", "mint_checkpoint": str(parse_path(path))})
        (tmp / PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def to_merged(
    path: str, out_dir: str | os.PathLike, base_model: str | None = None, dtype: torch.dtype = torch.float32
) -> Path:
    """Write a full Hugging Face model folder (weights + config + tokenizer) with the adapter at ``path``
    merged in: ``W <- W + (alpha / r) * B^T @ A`` for every LoRA layer, computed in fp32, saved as ``dtype``.

    A tied unembedding that the adapter changes is untied (``tie_word_embeddings = False``) so the input
    embedding stays the base model's. ``base_model`` defaults to the one recorded in the checkpoint.
    ``transformers.AutoModelForCausalLM.from_pretrained(out_dir)`` then gives mint's logits. Returns out_dir.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mint.engine.lora_layers import UNEMBED
    from mint.engine.models import resolve_model_source

    modules, spec, base = _load(path)
    source = resolve_model_source(base_model or base)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    output = model.get_output_embeddings()
    with torch.no_grad():
        for name, (a, b) in modules.items():
            try:
                linear = model.get_submodule(name)
            except AttributeError:
                raise BadRequestError(f"the base model has no module {name!r}", field="base_model") from None
            delta = spec.scale * (b.float().t() @ a.float())
            if tuple(delta.shape) != tuple(linear.weight.shape):
                raise BadRequestError(
                    f"{name}: adapter shape {tuple(delta.shape)} does not fit weight {tuple(linear.weight.shape)}",
                    field="base_model",
                )
            if linear is output and UNEMBED in spec.kinds:
                linear.weight = torch.nn.Parameter(linear.weight.detach().clone() + delta, requires_grad=False)
                model.config.tie_word_embeddings = False
                text_config = getattr(model.config, "get_text_config", lambda: None)()
                if text_config is not None:
                    text_config.tie_word_embeddings = False
            else:
                linear.weight.add_(delta)
    model.to(dtype)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mint-export-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
