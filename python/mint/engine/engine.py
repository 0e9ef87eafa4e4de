"""One Engine per base model: the resident model, its adapter pool, and a worker thread that runs all work.

Every method that touches the model is executed on the worker thread, in submission order, so clients on
any thread can share one engine without locks around the model.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from mint import types
from mint import storage
from mint.engine.adapter_files import (
    CheckpointPath,
    check_name,
    load_adapter,
    load_training_state,
    parse_path,
    save_adapter,
    save_training_state,
)
from mint.engine.adapter_pool import AdapterPool, AdapterSpec
from mint.engine.batching import check_tokens, pack
from mint.engine.lora_layers import ATTN, MLP, UNEMBED, LoraBatch, LoraContext, inject_lora
from mint.engine import logprobs as logprob_passes
from mint.engine import packed_pass
from mint.engine.losses import resolve as resolve_loss
from mint.engine.models import LoadedModel
from mint.engine.optimizer import AdapterOptimizerState, fused_step
from mint.engine.sampler import DecodeBatch, SampleRequest
from mint.engine.threads import on_fresh_thread
from mint.errors import BadRequestError, NotFoundError


@dataclass
class TrainingAdapter:
    """A training client's adapter: its run id, pool slot, spec and optimizer state."""

    run_id: str
    slot: int
    spec: AdapterSpec
    optimizer: AdapterOptimizerState
    seed: int | None


class Engine:
    """Hosts one base model for many adapters. Public methods return concurrent futures."""

    def __init__(self, loaded: LoadedModel, capacity: int = 4):
        self.base_model = loaded.name
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.context = LoraContext()
        self.layers = inject_lora(self.model, self.context, capacity, max_rank=8)
        self.pool = AdapterPool(self.layers, capacity=capacity, max_rank=8)
        self.vocab_size = self.model.get_input_embeddings().num_embeddings
        self.max_context = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self._adapters: dict[str, TrainingAdapter] = {}
        self._samplers: dict[str, list[int]] = {}  # checkpoint path -> [slot, refcount]
        self._stale_samplers: dict[int, list[int]] = {}  # slot -> [slot, refcount] of overwritten checkpoints
        self._jobs: collections.deque = collections.deque()
        self._jobs_cv = threading.Condition()
        self.max_sample_rows = 64
        self.max_batch_clients = 32
        self.gather_s = 0.005
        self.packed_passes = packed_pass.supports(self.model)  # False: padded [B, L] passes (any model)
        self._decode = DecodeBatch(self.model, self.context, self.tokenizer, self.max_context)
        self._deferred_free: set[int] = set()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name=f"mint-engine-{self.base_model}", daemon=True)
        self._worker.start()

    # ---- worker plumbing ----
    def _next_jobs(self, block: bool = True) -> list[tuple]:
        """The next job, or a batch of jobs that can run as one pass ([] if ``block`` is False and none waits).

        - sample jobs (only when blocking; a running decode batch admits them itself): every queued sample job
          (they read their own snapshot slots, so they never depend on training jobs), up to
          ``max_sample_rows`` sequences;
        - "fb" (forward / forward_backward) and "optim" jobs: the first pending job of each adapter, as long as
          it is of the same kind as the head job, scanning until a job that is not adapter-scoped (a barrier).
          Each adapter's requests therefore keep their order.
        """
        with self._jobs_cv:
            if block:
                while not self._jobs:
                    self._jobs_cv.wait()
                if self._jobs[0][0] in ("sample", "fb", "optim") and len(self._jobs) == 1:
                    # A lone request: give requests submitted right after it a moment to join its batch.
                    self._jobs_cv.wait(self.gather_s)
                index = 0
            else:
                index = next((i for i, job in enumerate(self._jobs) if job[0] != "sample"), None)
                if index is None:
                    return []
            first = self._jobs[index]
            del self._jobs[index]
            if first[0] == "sample":
                return [first] + self._take_samples(self.max_sample_rows - first[2][0].num_samples)
            if first[0] not in ("fb", "optim"):
                return [first]
            batch, seen, keep = [first], {first[2][0]}, collections.deque()
            jobs = list(self._jobs)
            for i, job in enumerate(jobs):
                if job[0] == "sample":
                    keep.append(job)
                elif job[0] in ("fb", "optim"):
                    run_id = job[2][0]
                    if job[0] == first[0] and run_id not in seen and len(batch) < self.max_batch_clients:
                        batch.append(job)
                    else:
                        keep.append(job)
                    seen.add(run_id)
                else:
                    keep.extend(jobs[i:])
                    break
            self._jobs = keep
            return batch

    def _take_samples(self, rows: int) -> list[tuple]:
        """Remove and return queued sample jobs, in order, while their sequences fit in ``rows``."""
        with self._jobs_cv:
            taken, keep = [], collections.deque()
            for job in self._jobs:
                if job[0] == "sample" and job[2][0].num_samples <= rows:
                    taken.append(job)
                    rows -= job[2][0].num_samples
                else:
                    keep.append(job)
            self._jobs = keep
            return taken

    def _run(self) -> None:
        stopping = False
        while not stopping or self._decode.num_rows:
            jobs = [] if stopping else self._next_jobs(block=not self._decode.num_rows)
            if jobs and jobs[0][0] == "stop":
                stopping = True
                jobs = []
            jobs = [j for j in jobs if j[3].set_running_or_notify_cancel()]
            if jobs:
                kind = jobs[0][0]
                if kind == "sample":
                    self._admit(jobs)
                elif kind == "fb":
                    self._run_forward_backward(jobs)
                elif kind == "optim":
                    self._run_optim(jobs)
                else:
                    _, fn, args, future = jobs[0]
                    try:
                        future.set_result(fn(*args))
                    except BaseException as exc:  # noqa: BLE001 - delivered to the caller through the future
                        future.set_exception(exc)
            if self._decode.num_rows:
                self._decode_step()

    def _admit(self, jobs: list[tuple]) -> None:
        """Add sample jobs to the running decode batch (continuous batching)."""
        ready = []
        for job in jobs:
            slot = job[2][0].slot
            if slot >= 0 and slot not in self.pool:
                job[3].set_exception(BadRequestError("the sampler of this request was released", field="model_path"))
            else:
                ready.append(job)
        if not ready:
            return
        try:
            self._decode.admit([(job[2][0], job[3]) for job in ready])
        except BaseException as exc:  # noqa: BLE001
            for job in ready:
                job[3].set_exception(exc)

    def _decode_step(self) -> None:
        """Admit queued sample requests that fit, decode one token for every live row, deliver finished ones."""
        if self._decode.can_merge():
            jobs = self._take_samples(self.max_sample_rows - self._decode.num_rows)
            jobs = [j for j in jobs if j[3].set_running_or_notify_cancel()]
            if jobs:
                self._admit(jobs)
        try:
            done = self._decode.step()
        except BaseException as exc:  # noqa: BLE001
            done = []
            for future, error in self._decode.fail_all(exc):
                future.set_exception(error)
        for future, response in done:
            future.set_result(response)
        in_use = self._decode.slots_in_use()
        for slot in [s for s in self._deferred_free if s not in in_use]:
            self._deferred_free.discard(slot)
            self.pool.free(slot)

    def _enqueue(self, kind: str, fn, args: tuple) -> Future:
        future: Future = Future()
        with self._jobs_cv:
            if self._closed:
                future.set_exception(RuntimeError(f"the engine of {self.base_model} is closed"))
                return future
            self._jobs.append((kind, fn, args, future))
            self._jobs_cv.notify()
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued jobs, then stop the worker thread; later requests fail."""
        with self._jobs_cv:
            if self._closed:
                return
            self._jobs.append(("stop", None, (), Future()))
            self._jobs_cv.notify()
            self._closed = True
        self._worker.join(timeout)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Queue ``fn(*args)`` on the worker thread; its result or exception arrives in the returned future."""
        return self._enqueue("call", fn, args)

    # ---- training adapters ----
    def create_training_adapter(self, config: types.LoraConfig, user_metadata: dict[str, str] | None = None) -> str:
        """Allocate and initialise an adapter for ``config`` and record its run in the metadata store;
        returns its run id. Runs on the worker."""
        kinds = {k for k, on in ((ATTN, config.train_attn), (MLP, config.train_mlp), (UNEMBED, config.train_unembed)) if on}
        spec = AdapterSpec(rank=config.rank, kinds=frozenset(kinds))
        slot = self.pool.allocate(spec)
        self.pool.initialise(slot, config.seed)
        run_id = uuid.uuid4().hex[:16]
        self._adapters[run_id] = TrainingAdapter(
            run_id=run_id,
            slot=slot,
            spec=spec,
            optimizer=AdapterOptimizerState(self.pool.parameters(slot)),
            seed=config.seed,
        )
        try:
            storage.store().create_run(run_id, self.base_model, storage.current_user(), config.rank, user_metadata)
        except BaseException:
            self.release_training_adapter(run_id)
            raise
        return run_id

    def adapter(self, run_id: str) -> TrainingAdapter:
        try:
            return self._adapters[run_id]
        except KeyError:
            raise NotFoundError(f"no training run {run_id!r} on {self.base_model}") from None

    def release_training_adapter(self, run_id: str) -> None:
        """Free the adapter's slot (its saved checkpoints stay on disk)."""
        adapter = self._adapters.pop(run_id, None)
        if adapter is not None:
            self.pool.free(adapter.slot)

    def submit_forward_backward(
        self, run_id: str, data: list[types.Datum], loss_fn: str, loss_fn_config: dict[str, float] | None,
        backward: bool = True,
    ) -> Future:
        """Queue a forward (``backward=False``) or forward_backward; the future gets a ForwardBackwardOutput.

        Requests of several adapters pending together run as one pass (each adapter's rows in its own segments).
        """
        return self._enqueue("fb", None, (run_id, data, loss_fn, loss_fn_config, backward))

    def submit_optim_step(self, run_id: str, params: types.AdamParams) -> Future:
        """Queue an AdamW step; pending steps of several adapters run as one fused call."""
        return self._enqueue("optim", None, (run_id, params))

    def forward_backward(
        self,
        run_id: str,
        data: list[types.Datum],
        loss_fn: str,
        loss_fn_config: dict[str, float] | None,
        backward: bool = True,
    ) -> types.ForwardBackwardOutput:
        """Run the loss over ``data`` and (if ``backward``) add its gradients to the adapter's accumulators.

        Runs on the calling thread (use it from the worker). Everything is validated before any work; a failure
        leaves the accumulated gradients untouched.
        """
        prepared = self._prepare_forward_backward(run_id, data, loss_fn, loss_fn_config)
        return self._forward_backward_many([prepared], backward)[0]

    def _prepare_forward_backward(self, run_id, data, loss_fn, loss_fn_config) -> tuple:
        """Validate one request: (adapter, loss_fn, spec, config, packed batch)."""
        adapter = self.adapter(run_id)
        spec, config = resolve_loss(loss_fn, loss_fn_config)
        batch = pack(data, spec, self.vocab_size, self.max_context)
        return adapter, loss_fn, spec, config, batch

    def _run_forward_backward(self, jobs: list[tuple]) -> None:
        prepared, ready = [], []
        for job in jobs:
            run_id, data, loss_fn, loss_fn_config, _ = job[2]
            try:
                prepared.append(self._prepare_forward_backward(run_id, data, loss_fn, loss_fn_config))
                ready.append(job)
            except BaseException as exc:  # noqa: BLE001
                job[3].set_exception(exc)
        if not ready:
            return
        backward = ready[0][2][4]
        same = [j[2][4] == backward for j in ready]
        if not all(same):  # forward and forward_backward never share a batch; run them apart
            for job, prep in zip(ready, prepared):
                self._deliver([job], lambda prep=prep, b=job[2][4]: self._forward_backward_many([prep], b))
            return
        self._deliver(ready, lambda: self._forward_backward_many(prepared, backward))

    @staticmethod
    def _deliver(jobs: list[tuple], compute: Callable[[], list]) -> None:
        try:
            results = compute()
        except BaseException as exc:  # noqa: BLE001
            for job in jobs:
                job[3].set_exception(exc)
            return
        for job, result in zip(jobs, results):
            job[3].set_result(result)

    def _forward_backward_many(self, prepared: list[tuple], backward: bool) -> list[types.ForwardBackwardOutput]:
        """One pass over the rows of several requests (each adapter in its own segments), one backward."""
        if self.packed_passes:
            return packed_pass.forward_backward_many(self, prepared, backward)
        width = max(p[4].input_ids.shape[1] for p in prepared)

        def pad(t: torch.Tensor) -> torch.Tensor:
            return F.pad(t, (0, width - t.shape[1]))

        input_ids = torch.cat([pad(p[4].input_ids) for p in prepared])
        attention = torch.cat([pad(p[4].attention_mask) for p in prepared])
        row_slots = [p[0].slot for p in prepared for _ in p[4].lengths]
        adapters = list({id(p[0]): p[0] for p in prepared}.values())
        kinds = set().union(*(a.spec.kinds for a in adapters))
        tensors = []
        if backward:
            for layer in self.layers.values():
                if layer.kind in kinds:
                    tensors += [layer.lora_a, layer.lora_b]
        for t in tensors:
            t.requires_grad_(True)
        self.context.batch = LoraBatch(row_slots)
        try:
            with torch.enable_grad() if backward else torch.no_grad():
                out = self.model(input_ids=input_ids, attention_mask=attention, use_cache=False)
                logits = out.logits.float()
                losses, extras, logprobs = [], [], []
                row = 0
                for _, _, spec, config, batch in prepared:
                    rows = len(batch.lengths)
                    n = batch.input_ids.shape[1]
                    part = logits[row : row + rows, :n]
                    row += rows
                    targets = batch.inputs["target_tokens"]
                    lp = torch.log_softmax(part, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                    loss, extra = spec.fn(lp, batch.inputs, batch.mask, config)
                    losses.append(loss)
                    extras.append(extra)
                    logprobs.append(lp.detach())
                grads = torch.autograd.grad(torch.stack(losses).sum(), tensors) if backward else ()
        finally:
            self.context.batch = None
            for t in tensors:
                t.requires_grad_(False)
        if backward:
            by_tensor = dict(zip((id(t) for t in tensors), grads))
            for adapter in adapters:
                rank, slot = adapter.spec.rank, adapter.slot
                own = []
                for layer in self.layers.values():
                    if layer.kind in adapter.spec.kinds:
                        own += [by_tensor[id(layer.lora_a)][slot, :rank], by_tensor[id(layer.lora_b)][slot, :rank]]
                adapter.optimizer.accumulate(own)
        results = []
        for (_, loss_fn, _, _, batch), loss, extra, lp in zip(prepared, losses, extras, logprobs):
            outputs = [
                {"logprobs": types.TensorData.from_torch(lp[i, :n].contiguous())} for i, n in enumerate(batch.lengths)
            ]
            metrics = {"loss:sum": float(loss.detach()), **{k: float(v) for k, v in extra.items()}}
            results.append(
                types.ForwardBackwardOutput(loss_fn_output_type=loss_fn, loss_fn_outputs=outputs, metrics=metrics)
            )
        return results

    def forward_backward_custom(self, run_id: str, data: list[types.Datum], loss_fn) -> types.ForwardBackwardOutput:
        """forward_backward with a user loss over the per-datum learner logprobs (see engine/logprobs.py)."""
        return logprob_passes.forward_backward_custom(self, run_id, data, loss_fn)

    def compute_logprobs(self, slot: int, prompt: types.ModelInput) -> list[float | None]:
        """Per-token logprobs of ``prompt`` under adapter ``slot`` (-1 = base); the first is None."""
        return logprob_passes.compute_logprobs(self, slot, prompt)

    def optim_step(self, run_id: str, params: types.AdamParams) -> types.OptimStepResponse:
        """Apply one AdamW step to the adapter with its accumulated gradients, then zero them."""
        return self._optim_many([(self.adapter(run_id), params)])[0]

    def _run_optim(self, jobs: list[tuple]) -> None:
        ready = []
        for job in jobs:
            try:
                ready.append((job, self.adapter(job[2][0])))
            except BaseException as exc:  # noqa: BLE001
                job[3].set_exception(exc)
        if ready:
            self._deliver([j for j, _ in ready], lambda: self._optim_many([(a, j[2][1]) for j, a in ready]))

    def _optim_many(self, steps: list[tuple[TrainingAdapter, types.AdamParams]]) -> list[types.OptimStepResponse]:
        """One fused AdamW call over several adapters, each with its own hyper-parameters."""
        groups = [([v for _, v in self.pool.parameters(a.slot)], a.optimizer, params) for a, params in steps]
        norms = fused_step(groups)
        return [
            types.OptimStepResponse(metrics={"grad_norm": norm, "step": float(a.optimizer.steps.max())})
            for (a, _), norm in zip(steps, norms)
        ]

    # ---- checkpoints for sampling ----
    def save_weights_for_sampler(
        self, run_id: str, name: str, ttl_seconds: int | None = None
    ) -> types.SaveWeightsForSamplerResponse:
        """Write the adapter's weights to ``mint://<run_id>/sampler_weights/<name>``."""
        adapter = self.adapter(run_id)
        path = CheckpointPath(run_id=run_id, kind="sampler_weights", name=check_name(name))
        weights = self.pool.export(adapter.slot)
        save_adapter(path, weights, adapter.spec, self.base_model, ttl_seconds)
        stale = self._samplers.pop(str(path), None)
        if stale is not None:
            # The old weights stay loaded for the SamplingClients that use them (released by slot); new
            # SamplingClients of this path load the new file.
            self._stale_samplers[stale[0]] = stale
        return types.SaveWeightsForSamplerResponse(path=str(path))

    # ---- training state (weights + optimizer) ----
    def save_state(self, run_id: str, name: str, ttl_seconds: int | None = None) -> types.SaveWeightsResponse:
        """Write the adapter's weights and Adam state (moments, per-tensor steps) to
        ``mint://<run_id>/weights/<name>`` in one atomic, checksummed file."""
        adapter = self.adapter(run_id)
        path = CheckpointPath(run_id=run_id, kind="weights", name=check_name(name))
        save_training_state(
            path, self.pool.export(adapter.slot), adapter.optimizer.state_tensors(), adapter.spec,
            self.base_model, ttl_seconds,
        )
        return types.SaveWeightsResponse(path=str(path))

    def load_state(self, run_id: str, path: str, with_optimizer: bool) -> types.LoadWeightsResponse:
        """Overwrite the adapter's weights from checkpoint ``path``. With ``with_optimizer`` the Adam state is
        restored too (``path`` must be a training-state checkpoint); without it the moments and step counts
        are reset to zero. Accumulated gradients are zeroed either way. Everything is read and checked before
        anything changes: a failure leaves the adapter as it was."""
        adapter = self.adapter(run_id)
        parsed = parse_path(path, field="path")
        if with_optimizer:
            if parsed.kind != "weights":
                raise BadRequestError("optimizer state is only saved in weights/ checkpoints (save_state)", field="path")
            weights, optim, spec, base = load_training_state(parsed)
        else:
            (weights, spec, base), optim = load_adapter(parsed), None
        if base and base != self.base_model:
            raise BadRequestError(f"checkpoint was trained on {base!r}, not {self.base_model!r}", field="path")
        if (spec.rank, spec.kinds, spec.alpha) != (adapter.spec.rank, adapter.spec.kinds, adapter.spec.alpha):
            raise BadRequestError(
                f"checkpoint has rank {spec.rank}, alpha {spec.alpha}, layers {sorted(spec.kinds)}; this client has "
                f"rank {adapter.spec.rank}, alpha {adapter.spec.alpha}, layers {sorted(adapter.spec.kinds)}",
                field="path",
            )
        scratch = AdapterOptimizerState(self.pool.parameters(adapter.slot))
        try:
            if optim is not None:
                scratch.load_state_tensors(optim)  # validates before the live state is touched
            self.pool.load(adapter.slot, weights)
        except ValueError as exc:
            raise BadRequestError(str(exc), field="path") from exc
        adapter.optimizer = scratch  # fresh zero moments and steps unless restored above
        storage.store().touch_run(run_id)
        return types.LoadWeightsResponse(path=str(parsed))

    def acquire_sampler(self, model_path: str | None) -> int:
        """A pool slot holding the weights at ``model_path`` (-1 for the bare base model), reference counted."""
        if model_path is None:
            return -1
        path = str(parse_path(model_path))
        if path.startswith("mint://") and "/weights/" in path:
            raise BadRequestError("training-state paths cannot be sampled; use a sampler_weights path", field="model_path")
        entry = self._samplers.get(path)
        if entry is None:
            tensors, spec, base = load_adapter(parse_path(path))
            if base and base != self.base_model:
                raise BadRequestError(f"checkpoint was trained on {base!r}, not {self.base_model!r}", field="model_path")
            slot = self.pool.allocate(spec)
            try:
                self.pool.load(slot, tensors)
            except ValueError as exc:
                self.pool.free(slot)
                raise BadRequestError(str(exc), field="model_path") from exc
            entry = self._samplers[path] = [slot, 0]
        entry[1] += 1
        return entry[0]

    def release_sampler(self, model_path: str | None, slot: int | None = None) -> None:
        """Drop one reference to a sampler slot (``slot``: the one acquire_sampler returned, which identifies
        weights of a checkpoint overwritten since); the slot is freed when none remain."""
        if model_path is None:
            return
        path = str(parse_path(model_path))
        if slot is not None and slot in self._stale_samplers:
            entry = self._stale_samplers[slot]
            entry[1] -= 1
            if entry[1] > 0:
                return
            del self._stale_samplers[slot]
            if slot in self._decode.slots_in_use():
                self._deferred_free.add(slot)
            else:
                self.pool.free(slot)
            return
        entry = self._samplers.get(path)
        if entry is None or (slot is not None and entry[0] != slot):
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self._samplers[path]
            if entry[0] in self._decode.slots_in_use():
                self._deferred_free.add(entry[0])  # freed once its live sequences finish
            else:
                self.pool.free(entry[0])

    def submit_sample(
        self,
        slot: int,
        prompt: types.ModelInput,
        num_samples: int,
        params: types.SamplingParams,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
    ) -> Future:
        """Queue a sample request for adapter ``slot`` (-1 = base model); the future gets a SampleResponse.

        Requests join the running decode batch between steps (continuous batching). Input errors are raised
        here, before queueing.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise BadRequestError("must be a positive integer", field="num_samples")
        if num_samples > self.max_sample_rows:
            raise BadRequestError(f"must be at most {self.max_sample_rows}", field="num_samples")
        tokens = prompt.to_ints()
        check_tokens(tokens, self.vocab_size, self.max_context, "prompt")
        if len(tokens) >= self.max_context:
            raise BadRequestError(f"leaves no room to generate within the context of {self.max_context}", field="prompt")
        for i, tok in enumerate(params.stop_tokens()):
            if not 0 <= tok < self.vocab_size:
                raise BadRequestError(f"token id {tok} is outside the vocabulary", field="sampling_params.stop")
        if not isinstance(include_prompt_logprobs, bool):
            raise BadRequestError("must be a bool", field="include_prompt_logprobs")
        if isinstance(topk_prompt_logprobs, bool) or not isinstance(topk_prompt_logprobs, int) or not (
            0 <= topk_prompt_logprobs <= self.vocab_size
        ):
            raise BadRequestError(f"must be an integer in [0, {self.vocab_size}]", field="topk_prompt_logprobs")
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(7), "little")
        request = SampleRequest(
            slot=slot, prompt=tokens, num_samples=num_samples, params=params, seed=seed,
            include_prompt_logprobs=include_prompt_logprobs, topk_prompt_logprobs=topk_prompt_logprobs,
        )
        return self._enqueue("sample", None, (request,))


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


@atexit.register
def _close_engines() -> None:
    """Stop the worker threads before the interpreter tears torch down under them."""
    with _engines_lock:
        engines = list(_engines.values())
    for engine in engines:
        engine.close()


def get_engine(base_model: str) -> Engine:
    """The process-wide engine for ``base_model``, loading the model on first use (once per base model)."""
    from mint.engine.models import canonical_name, load_base_model

    key = canonical_name(base_model)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = on_fresh_thread(lambda: Engine(load_base_model(base_model)), "mint-load")
        return engine

