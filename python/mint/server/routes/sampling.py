"""Sampling: create_sampling_session, samplers/{id} (GET, DELETE), asample."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends

from mint.errors import BadRequestError
from mint.server import deps
from mint.server.routes._body import Body
from mint.server.state import ServerState, tinker_path

router = APIRouter(prefix="/api/v1")


class CreateSamplingSession(Body):
    session_id: Optional[str] = None
    sampling_session_seq_id: Optional[int] = None
    base_model: Optional[str] = None
    model_path: Optional[str] = None


class Sample(Body):
    num_samples: int = 1
    prompt: Any
    sampling_params: Any
    sampling_session_id: Optional[str] = None
    base_model: Optional[str] = None
    model_path: Optional[str] = None
    seq_id: Optional[int] = None
    prompt_logprobs: Optional[bool] = None
    topk_prompt_logprobs: int = 0
    topk_sample_logprobs: int = 0
    target_prompt_logprobs: Optional[Any] = None
    prompt_alt_tokens_k: int = 0
    prompt_logprobs_last_n: Optional[int] = None


@router.post("/create_sampling_session")
def create_sampling_session(body: CreateSamplingSession, st: ServerState = Depends(deps.state),
                            user: str = Depends(deps.user)):
    if body.model_path is None and body.base_model is None:
        raise BadRequestError("give model_path or base_model", field="model_path")
    sid = st.open_sampler(user, body.session_id, body.model_path, body.base_model)
    return {"type": "create_sampling_session", "sampling_session_id": sid}


@router.get("/samplers/{sampler_id}")
def get_sampler(sampler_id: str, st: ServerState = Depends(deps.state), user: str = Depends(deps.user)):
    x = st.sampler(user, sampler_id)
    return {"sampler_id": sampler_id, "base_model": x.engine.base_model,
            "model_path": tinker_path(x.model_path) if x.model_path else None}


@router.delete("/samplers/{sampler_id}")
def release_sampler(sampler_id: str, st: ServerState = Depends(deps.state), user: str = Depends(deps.user)):
    """Close a sampler session (its owner only; 404 otherwise): no more samples can be requested on it, and
    its adapter-pool slot is freed once the samples already queued finish. mint's remote SamplingClient
    calls this when it is closed or garbage collected."""
    st.release_sampler(user, sampler_id)
    return None


@router.post("/asample")
def asample(body: Sample, st: ServerState = Depends(deps.state), user: str = Depends(deps.user)):
    for name, value, unset in (("topk_sample_logprobs", body.topk_sample_logprobs, 0),
                               ("target_prompt_logprobs", body.target_prompt_logprobs, None),
                               ("prompt_alt_tokens_k", body.prompt_alt_tokens_k, 0),
                               ("prompt_logprobs_last_n", body.prompt_logprobs_last_n, None)):
        if value != unset:
            raise BadRequestError("is not supported by mint", field=name)
    if body.sampling_session_id is None:
        raise BadRequestError("is required (create one with create_sampling_session)", field="sampling_session_id")
    st.registry.reserve()
    future = st.sample(user, body.sampling_session_id, body.prompt, body.num_samples, body.sampling_params,
                       bool(body.prompt_logprobs), body.topk_prompt_logprobs)
    rid = st.registry.add(user, future)
    return {"request_id": rid, "sample_sequence_ids": [f"{rid}-{i}" for i in range(body.num_samples)]}
