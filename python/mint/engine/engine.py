"""One Engine per base model: the resident model, its adapter pool, and a worker thread that runs all work.

Every method that touches the model is executed on the worker thread, in submission order, so clients on
any thread can share one engine without locks around the model.
"""

from __future__ import annotations

import os
import queue
import threading
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from mint import types
from mint.engine.adapter_files import CheckpointPath, check_name, load_adapter, parse_path, save_adapter
from mint.engine.adapter_pool import AdapterPool, AdapterSpec
from mint.engine.batching import check_tokens, pack
from mint.engine.lora_layers import ATTN, MLP, UNEMBED, LoraBatch, LoraContext, inject_lora
from mint.engine.losses import LOSSES
from mint.engine.models import LoadedModel
from mint.engine.optimizer import AdapterOptimizerState, fused_step
from mint.engine.sampler import generate
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
        self._jobs: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._run, name=f"mint-engine-{self.base_model}", daemon=True)
        self._worker.start()

    # ---- worker plumbing ----
    def _run(self) -> None:
        while True:
            fn, args, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - delivered to the caller through the future
                future.set_exception(exc)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Queue ``fn(*args)`` on the worker thread; its result or exception arrives in the returned future."""
        future: Future = Future()
        self._jobs.put((fn, args, future))
        return future

    # ---- training adapters ----
    def create_training_adapter(self, config: types.LoraConfig) -> str:
        """Allocate and initialise an adapter for ``config``; returns its run id. Runs on the worker."""
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

    def _pool_tensors(self, adapter: TrainingAdapter) -> list[torch.Tensor]:
        out = []
        for layer in self.layers.values():
            if layer.kind in adapter.spec.kinds:
                out += [layer.lora_a, layer.lora_b]
        return out

    def forward_backward(
        self,
        run_id: str,
        data: list[types.Datum],
        loss_fn: str,
        loss_fn_config: dict[str, float] | None,
        backward: bool = True,
    ) -> types.ForwardBackwardOutput:
        """Run the loss over ``data`` and (if ``backward``) add its gradients to the adapter's accumulators.

        Everything is validated before any work; a failure leaves the accumulated gradients untouched.
        """
        adapter = self.adapter(run_id)
        spec = LOSSES.get(loss_fn) if isinstance(loss_fn, str) else None
        if spec is None:
            raise BadRequestError(f"unknown loss {loss_fn!r}; choose one of {sorted(LOSSES)}", field="loss_fn")
        config = dict(spec.config_keys)
        for key, value in (loss_fn_config or {}).items():
            if key not in spec.config_keys:
                raise BadRequestError(f"unknown key {key!r} for {loss_fn}", field="loss_fn_config")
            config[key] = float(value)
        batch = pack(data, spec, self.vocab_size, self.max_context)
        tensors = self._pool_tensors(adapter) if backward else []
        for t in tensors:
            t.requires_grad_(True)
        self.context.batch = LoraBatch([adapter.slot] * len(batch.lengths))
        try:
            with torch.enable_grad() if backward else torch.no_grad():
                out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
                logits = out.logits.float()
                targets = batch.inputs["target_tokens"]
                logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                loss, extra = spec.fn(logprobs, batch.inputs, batch.mask, config)
                grads = torch.autograd.grad(loss, tensors) if backward else ()
        finally:
            self.context.batch = None
            for t in tensors:
                t.requires_grad_(False)
        if backward:
            rank, slot = adapter.spec.rank, adapter.slot
            adapter.optimizer.accumulate([g[slot, :rank] for g in grads])
        lp = logprobs.detach()
        outputs = [
            {"logprobs": types.TensorData.from_torch(lp[i, :n].contiguous())} for i, n in enumerate(batch.lengths)
        ]
        metrics = {"loss:sum": float(loss.detach()), **{k: float(v) for k, v in extra.items()}}
        return types.ForwardBackwardOutput(
            loss_fn_output_type=loss_fn, loss_fn_outputs=outputs, metrics=metrics
        )

    def optim_step(self, run_id: str, params: types.AdamParams) -> types.OptimStepResponse:
        """Apply one AdamW step to the adapter with its accumulated gradients, then zero them."""
        adapter = self.adapter(run_id)
        views = [view for _, view in self.pool.parameters(adapter.slot)]
        (norm,) = fused_step([(views, adapter.optimizer, params)])
        return types.OptimStepResponse(metrics={"grad_norm": norm, "step": float(adapter.optimizer.steps.max())})

    # ---- checkpoints for sampling ----
    def save_weights_for_sampler(self, run_id: str, name: str) -> types.SaveWeightsForSamplerResponse:
        """Write the adapter's weights to ``mint://<run_id>/sampler_weights/<name>``."""
        adapter = self.adapter(run_id)
        path = CheckpointPath(run_id=run_id, kind="sampler_weights", name=check_name(name))
        save_adapter(path, self.pool.export(adapter.slot), adapter.spec, self.base_model)
        return types.SaveWeightsForSamplerResponse(path=str(path))

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

    def release_sampler(self, model_path: str | None) -> None:
        """Drop one reference to a sampler slot; the slot is freed when none remain."""
        if model_path is None:
            return
        path = str(parse_path(model_path))
        entry = self._samplers.get(path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self._samplers[path]
            self.pool.free(entry[0])

    def sample(
        self, slot: int, prompt: types.ModelInput, num_samples: int, params: types.SamplingParams
    ) -> types.SampleResponse:
        """Sample ``num_samples`` sequences from the adapter in ``slot`` (-1 = base model)."""
        if not isinstance(num_samples, int) or num_samples < 1:
            raise BadRequestError("must be a positive integer", field="num_samples")
        tokens = prompt.to_ints()
        check_tokens(tokens, self.vocab_size, self.max_context, "prompt")
        if len(tokens) >= self.max_context:
            raise BadRequestError(f"leaves no room to generate within the context of {self.max_context}", field="prompt")
        for i, tok in enumerate(params.stop_tokens()):
            if not 0 <= tok < self.vocab_size:
                raise BadRequestError(f"token id {tok} is outside the vocabulary", field=f"sampling_params.stop[{i}]")
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(7), "little")
        sequences = generate(
            self.model, self.context, self.tokenizer, slot, tokens, num_samples, params, seed, self.max_context
        )
        return types.SampleResponse(sequences=sequences)


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(base_model: str) -> Engine:
    """The process-wide engine for ``base_model``, loading the model on first use (once per base model)."""
    from mint.engine.models import canonical_name, load_base_model

    key = canonical_name(base_model)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = Engine(load_base_model(base_model))
        return engine
