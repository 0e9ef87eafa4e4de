"""What a running server holds: sessions, training models, sampler sessions and the request registry.

Every operation runs on behalf of one user (the owner of the API key). Training models, sampler sessions,
sessions and request ids are visible to their owner only; anything of another user reads as "not found"
(never "forbidden", so existence does not leak). Work goes to the process-wide engines
(``mint.engine.get_engine``), one per base model, so requests of all users batch together there.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field as dc_field
from typing import Any, Callable

from mint import storage, types
from mint.client._validate import coerce
from mint.engine.adapter_files import check_name, parse_path
from mint.engine.engine import Engine, get_engine
from mint.engine.models import DEFAULT_BASE_MODEL, canonical_name
from mint.errors import BadRequestError, NotFoundError, PermissionDeniedError
from mint.server.config import ServerConfig
from mint.server.futures import FutureRegistry


def run_as(user: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` wrapped to run with ``storage.current_user() == user`` (on whatever thread calls it)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with storage.acting_user(user):
            return fn(*args, **kwargs)

    return wrapper


def tinker_path(path: str) -> str:
    """``mint://...`` as ``tinker://...`` (the SDK only accepts tinker:// paths)."""
    return "tinker://" + path[len("mint://"):] if path.startswith("mint://") else path


def check_int64(value: Any, field: str) -> None:
    """BadRequestError unless ``value`` is None or fits a signed 64-bit integer (torch's seed and index type)."""
    if value is not None and not -(2**63) <= value < 2**63:
        raise BadRequestError("must fit in a signed 64-bit integer", field=field)


def check_readable(user: str, path: str, field: str) -> tuple[Any, dict[str, str]]:
    """(parsed path, metadata) of a checkpoint ``user`` may read; NotFoundError otherwise (also when it
    exists but is another user's private checkpoint)."""
    addr = parse_path(path, field=field)
    try:
        with storage.acting_user(user):
            return addr, storage.checkpoint_metadata(addr)
    except PermissionDeniedError:
        raise NotFoundError(f"no checkpoint {addr}") from None


@dataclass
class Session:
    owner: str
    last_seen: float = dc_field(default_factory=time.monotonic)
    models: set[str] = dc_field(default_factory=set)
    samplers: set[str] = dc_field(default_factory=set)
    finished: bool = False


@dataclass
class Model:
    owner: str
    engine: Engine
    run_id: str
    config: types.LoraConfig
    session_id: str | None


@dataclass
class Sampler:
    owner: str
    engine: Engine
    slot: int
    model_path: str | None
    session_id: str | None
    last_used: float = dc_field(default_factory=time.monotonic)
    inflight: set = dc_field(default_factory=set)  # sample futures not finished yet
    released: bool = False
    lock: threading.Lock = dc_field(default_factory=threading.Lock)


def release_when_idle(x: Sampler) -> None:
    """Mark ``x`` released and give its adapter-pool slot back to the engine once the samples already
    queued on it have finished (a queued sample must never read a slot that was freed and reused)."""
    with x.lock:
        if x.released:
            return
        x.released = True
        pending = list(x.inflight)
    if not pending:
        x.engine.submit(x.engine.release_sampler, x.model_path, x.slot)
        return
    remaining = [len(pending)]
    count_lock = threading.Lock()

    def one_done(_: Future) -> None:
        with count_lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            x.engine.submit(x.engine.release_sampler, x.model_path, x.slot)

    for f in pending:
        f.add_done_callback(one_done)


class ServerState:
    """The mutable state of one server process. Thread-safe."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.registry = FutureRegistry(config.max_pending, config.result_ttl_s, config.retrieved_grace_s)
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mint-server")
        sources = config.base_models or [DEFAULT_BASE_MODEL]
        self.allowed: dict[str, str] = {}
        for src in sources:
            self.allowed.setdefault(canonical_name(src), src)
        self.sessions: dict[str, Session] = {}
        self.models: dict[str, Model] = {}
        self.aliases: dict[str, str] = {}
        self.samplers: dict[str, Sampler] = {}
        self._evicted: OrderedDict[str, str] = OrderedDict()  # recently evicted sampler id -> owner (bounded)
        self._lock = threading.Lock()

    # ---- base models ----
    def engine_for(self, base_model: str | None, field: str = "base_model") -> Engine:
        """The engine of an allowed base model (loaded on first use). BadRequestError for any other."""
        return get_engine(self.check_allowed(base_model, field))

    def model_names(self) -> list[str]:
        return list(self.allowed)

    # ---- sessions ----
    def create_session(self, user: str) -> str:
        self.sweep_sessions()
        sid = uuid.uuid4().hex
        with self._lock:
            self.sessions[sid] = Session(owner=user)
        return sid

    def session(self, user: str, session_id: str | None, field: str = "session_id") -> Session | None:
        """The caller's live session ``session_id`` (None if not given); NotFoundError if unknown."""
        if session_id is None:
            return None
        with self._lock:
            s = self.sessions.get(session_id)
        if s is None or s.owner != user or s.finished:
            raise NotFoundError(f"no session {session_id!r}")
        s.last_seen = time.monotonic()
        return s

    def session_required(self, user: str, session_id: str | None) -> Session:
        if session_id is None:
            raise BadRequestError("is required (create one with create_session)", field="session_id")
        return self.session(user, session_id)

    def finish_session(self, user: str, session_id: str) -> None:
        """End a session: release its training adapters and sampler slots (checkpoints stay)."""
        s = self.session(user, session_id)
        s.finished = True
        with self._lock:
            self.sessions.pop(session_id, None)
            models = [self.models.pop(m) for m in s.models if m in self.models]
            for alias in [a for a, m in self.aliases.items() if m in s.models]:
                del self.aliases[alias]
            samplers = [self.samplers.pop(x) for x in s.samplers if x in self.samplers]
        for m in models:
            m.engine.submit(m.engine.release_training_adapter, m.run_id)
        for x in samplers:
            release_when_idle(x)

    def sweep_sessions(self) -> None:
        """Finish sessions that sent nothing (no heartbeat, no request) for ``session_ttl_s``."""
        now = time.monotonic()
        with self._lock:
            stale = [(sid, s.owner) for sid, s in self.sessions.items() if now - s.last_seen > self.config.session_ttl_s]
        for sid, owner in stale:
            try:
                self.finish_session(owner, sid)
            except NotFoundError:
                pass

    # ---- training models ----
    def model(self, user: str, model_id: str | None, field: str = "model_id") -> Model:
        if not isinstance(model_id, str) or not model_id:
            raise BadRequestError("is required", field=field)
        with self._lock:
            m = self.models.get(self.aliases.get(model_id, model_id))
        if m is None or m.owner != user:
            raise NotFoundError(f"no training model {model_id!r}")
        if m.session_id is not None and m.session_id in self.sessions:
            self.sessions[m.session_id].last_seen = time.monotonic()
        return m

    def _register_model(self, m: Model, alias: str | None = None) -> None:
        with self._lock:
            self.models[m.run_id] = m
            if alias:
                self.aliases[alias] = m.run_id
            s = self.sessions.get(m.session_id) if m.session_id else None
            if s is not None:
                s.models.add(m.run_id)

    def _check_quota(self, user: str, table: dict, limit: int, what: str) -> None:
        with self._lock:
            count = sum(1 for x in table.values() if x.owner == user)
        if count >= limit:
            raise BadRequestError(
                f"{user!r} already has {count} open {what} (the limit); finish a session to release them",
                field="session_id",
            )

    def check_allowed(self, base_model: Any, field: str = "base_model") -> str:
        """The configured source of an allowed base model, without loading it."""
        if not isinstance(base_model, str) or not base_model:
            raise BadRequestError("is required", field=field)
        key = canonical_name(base_model)
        if key not in self.allowed:
            raise BadRequestError(f"{base_model!r} is not served here; available: {sorted(self.allowed)}", field=field)
        return self.allowed[key]

    def create_model(self, user: str, session_id: str, base_model: str, lora: dict | None,
                     user_metadata: dict | None) -> Future:
        """Queue the creation of a LoRA adapter in the caller's session (released when the session ends);
        the future gets ``{"model_id": ...}``."""
        self.sweep_sessions()
        self.session_required(user, session_id)
        self._check_quota(user, self.models, self.config.max_models_per_user, "training models")
        config = coerce(types.LoraConfig, lora if lora is not None else {"rank": 32}, "lora_config")
        check_int64(config.seed, "lora_config.seed")
        self.check_allowed(base_model)
        meta = {str(k): str(v) for k, v in (user_metadata or {}).items()}

        def work():
            eng = self.engine_for(base_model)
            run_id = eng.submit(run_as(user, eng.create_training_adapter), config, meta or None).result()
            self._register_model(Model(user, eng, run_id, config, session_id))
            return {"model_id": run_id, "type": "create_model"}

        return self.pool.submit(work)

    def create_model_from_checkpoint(self, user: str, session_id: str, model_seq_id: int, path: str,
                                     optimizer: bool, user_metadata: dict | None) -> Future:
        """Queue "create via load": a new adapter shaped like the checkpoint, loaded from it. Its model id
        is ``<session_id>:train:<model_seq_id>`` (what the SDK derives on its side)."""
        from mint.engine.adapter_pool import AdapterSpec
        from mint.engine.lora_layers import ATTN, MLP, UNEMBED

        self.sweep_sessions()
        self.session_required(user, session_id)
        self._check_quota(user, self.models, self.config.max_models_per_user, "training models")
        alias = f"{session_id}:train:{model_seq_id}"
        _, meta = check_readable(user, path, "path")
        spec = AdapterSpec.from_metadata(meta)
        config = types.LoraConfig(rank=spec.rank, train_mlp=MLP in spec.kinds, train_attn=ATTN in spec.kinds,
                                  train_unembed=UNEMBED in spec.kinds)
        eng = self.engine_for(meta.get("base_model") or DEFAULT_BASE_MODEL, field="path")
        um = {str(k): str(v) for k, v in (user_metadata or {}).items()} or None

        def work():
            run_id = eng.submit(run_as(user, eng.create_training_adapter), config, um).result()
            try:
                eng.submit(run_as(user, eng.load_state), run_id, path, optimizer).result()
            except BaseException:
                eng.submit(eng.release_training_adapter, run_id)
                raise
            self._register_model(Model(user, eng, run_id, config, session_id), alias=alias)
            return {"path": tinker_path(str(parse_path(path))), "model_id": alias, "type": "load_weights"}

        return self.pool.submit(work)

    def get_info(self, user: str, model_id: str) -> dict:
        m = self.model(user, model_id)
        name = m.engine.base_model
        return {
            "type": "get_info",
            "model_id": model_id,
            "model_data": {"arch": type(m.engine.model).__name__, "model_name": name, "tokenizer_id": name},
            "is_lora": True,
            "lora_rank": m.config.rank,
            "model_name": name,
        }

    def forward_backward(self, user: str, model_id: str, data: list, loss_fn: str, loss_fn_config, backward: bool) -> Future:
        m = self.model(user, model_id)
        if not isinstance(data, list) or not data:
            raise BadRequestError("must be a non-empty list of Datum", field="forward_backward_input.data")
        return m.engine.submit_forward_backward(m.run_id, data, loss_fn, loss_fn_config, backward)

    def optim_step(self, user: str, model_id: str, adam_params: dict | None) -> Future:
        m = self.model(user, model_id)
        params = coerce(types.AdamParams, adam_params if adam_params is not None else {}, "adam_params")
        return m.engine.submit_optim_step(m.run_id, params)

    def save_state(self, user: str, model_id: str, name: str | None, ttl_seconds: int | None) -> Future:
        m = self.model(user, model_id)
        name = check_name(name, "path") if name is not None else f"state-{uuid.uuid4().hex[:12]}"
        storage.checkpoints.check_ttl(ttl_seconds)
        return m.engine.submit(run_as(user, m.engine.save_state), m.run_id, name, ttl_seconds)

    def load_state(self, user: str, model_id: str, path: str, optimizer: bool) -> Future:
        m = self.model(user, model_id)
        check_readable(user, path, "path")
        return m.engine.submit(run_as(user, m.engine.load_state), m.run_id, path, bool(optimizer))

    def save_for_sampler(self, user: str, model_id: str, name: str | None, ttl_seconds: int | None,
                         make_session: bool) -> Future:
        """Save sampler weights. With ``make_session`` (no name: ``save_weights_and_get_sampling_client``)
        the weights go to a generated name that expires after a day and a sampler session is opened on
        them; the future then gets ``{"path", "sampling_session_id"}``."""
        m = self.model(user, model_id)
        if name is not None:
            name = check_name(name, "path")
        storage.checkpoints.check_ttl(ttl_seconds)
        if make_session:
            name, ttl_seconds = f"ephemeral-{uuid.uuid4().hex[:12]}", ttl_seconds or 86400
        elif name is None:
            raise BadRequestError("is required (or give sampling_session_seq_id)", field="path")
        saved = m.engine.submit(run_as(user, m.engine.save_weights_for_sampler), m.run_id, name, ttl_seconds)
        if not make_session:
            return saved

        def work():
            path = saved.result().path
            sid = self.open_sampler(user, m.session_id, path, None)
            return {"path": tinker_path(path), "sampling_session_id": sid, "type": "save_weights_for_sampler"}

        return self.pool.submit(work)

    # ---- samplers ----
    def open_sampler(self, user: str, session_id: str | None, model_path: str | None, base_model: str | None) -> str:
        """Open a sampler session over a checkpoint ``user`` may read, or over a bare base model, in the
        caller's session (released when it ends). Blocking."""
        self.sweep_sessions()
        self.session_required(user, session_id)
        if model_path is not None:
            addr, meta = check_readable(user, model_path, "model_path")
            if addr.kind != "sampler_weights":
                raise BadRequestError("sample from a sampler_weights path (save_weights_for_sampler)", field="model_path")
            stored = meta.get("base_model") or DEFAULT_BASE_MODEL
            if base_model is not None and canonical_name(base_model) != canonical_name(stored):
                raise BadRequestError(f"the checkpoint belongs to {stored!r}", field="base_model")
            eng = self.engine_for(stored, field="model_path")
            path = str(addr)
            slot = eng.submit(run_as(user, eng.acquire_sampler), path).result()
        else:
            eng = self.engine_for(base_model)
            path, slot = None, -1
        sid = uuid.uuid4().hex
        with self._lock:
            self.samplers[sid] = Sampler(user, eng, slot, path, session_id)
            s = self.sessions.get(session_id) if session_id else None
            if s is not None:
                s.samplers.add(sid)
            evicted = self._evict_samplers_locked(user, keep=sid)
        for x in evicted:
            release_when_idle(x)
        return sid

    def _evict_samplers_locked(self, user: str, keep: str) -> list[Sampler]:
        """Drop ``user``'s least recently used sampler sessions (never ``keep``) until at most
        ``max_samplers_per_user`` remain; returns them, for the caller to release. Holds ``self._lock``."""
        limit = max(1, self.config.max_samplers_per_user)
        mine = sorted(((x.last_used, sid) for sid, x in self.samplers.items() if x.owner == user and sid != keep))
        out = []
        for _, sid in mine[: max(0, len(mine) + 1 - limit)]:
            x = self.samplers.pop(sid)
            s = self.sessions.get(x.session_id) if x.session_id else None
            if s is not None:
                s.samplers.discard(sid)
            self._evicted[sid] = user
            out.append(x)
        while len(self._evicted) > 4096:
            self._evicted.popitem(last=False)
        return out

    def release_sampler(self, user: str, sampling_session_id: str) -> None:
        """Close the caller's sampler session now: it can no longer be sampled, and its adapter-pool slot
        is freed once its queued samples finish. NotFoundError for an unknown (or another user's) id."""
        x = self.sampler(user, sampling_session_id)
        with self._lock:
            if self.samplers.pop(sampling_session_id, None) is None:
                raise NotFoundError(f"no sampling session {sampling_session_id!r}")
            s = self.sessions.get(x.session_id) if x.session_id else None
            if s is not None:
                s.samplers.discard(sampling_session_id)
        release_when_idle(x)

    def sampler(self, user: str, sampling_session_id: str | None) -> Sampler:
        if not isinstance(sampling_session_id, str) or not sampling_session_id:
            raise BadRequestError("is required", field="sampling_session_id")
        with self._lock:
            x = self.samplers.get(sampling_session_id)
            evicted = x is None and self._evicted.get(sampling_session_id) == user
        if evicted:
            raise NotFoundError(
                f"no sampling session {sampling_session_id!r}: it was closed to make room (you had "
                f"max_samplers_per_user={self.config.max_samplers_per_user} open and this one was the least "
                "recently used); create a new sampling client"
            )
        if x is None or x.owner != user:
            raise NotFoundError(f"no sampling session {sampling_session_id!r}")
        x.last_used = time.monotonic()
        return x

    def sample(self, user: str, sampling_session_id: str, prompt: Any, num_samples: int, sampling_params: Any,
               prompt_logprobs: bool, topk_prompt_logprobs: int) -> Future:
        x = self.sampler(user, sampling_session_id)
        prompt = coerce(types.ModelInput, prompt, "prompt")
        if sampling_params is None:
            raise BadRequestError("is required", field="sampling_params")
        params = coerce(types.SamplingParams, sampling_params, "sampling_params")
        check_int64(params.seed, "sampling_params.seed")
        if not -(2**31) <= params.top_k < 2**31:
            raise BadRequestError("must fit in a signed 32-bit integer", field="sampling_params.top_k")
        with x.lock:  # released concurrently: its slot may be going away, so queue nothing on it
            if x.released:
                raise NotFoundError(f"no sampling session {sampling_session_id!r}")
            future = x.engine.submit_sample(x.slot, prompt, num_samples, params, bool(prompt_logprobs),
                                            topk_prompt_logprobs)
            x.inflight.add(future)
        future.add_done_callback(x.inflight.discard)
        return future

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
