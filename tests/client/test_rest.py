"""RestClient over the runs and checkpoints of the data directory."""

from __future__ import annotations

import asyncio
import time

import pytest

import mint
from mint import types


@pytest.fixture
def rest():
    return mint.ServiceClient().create_rest_client()


@pytest.fixture
def run(tiny_llama, monkeypatch):
    """A fresh user with one run holding a training and a sampler checkpoint."""
    monkeypatch.setenv("MINT_USER", f"user-{time.monotonic_ns()}")
    trainer = mint.ServiceClient().create_lora_training_client(base_model=tiny_llama, rank=2, seed=0, train_unembed=False)
    state = trainer.save_state("state-1").result().path
    sampler = trainer.save_weights_for_sampler("sampler-1").result().path
    yield trainer, state, sampler
    trainer._engine.submit(trainer._engine.release_training_adapter, trainer.model_id).result()


def test_get_run_and_checkpoints(rest, run, tiny_llama):
    trainer, state, sampler = run
    got = rest.get_training_run(trainer.model_id).result()
    assert isinstance(got, types.TrainingRun)
    assert (got.id, got.training_run_id, got.base_model, got.lora_rank) == (trainer.model_id,) * 2 + (tiny_llama, 2)
    assert got.owner == got.model_owner == mint.storage.current_user() and got.corrupted is False
    by_type = {c.type: c for c in got.checkpoints}
    assert by_type["training"].path == state and by_type["sampler"].tinker_path == sampler
    assert by_type["training"].checkpoint_id == "weights/state-1" and by_type["sampler"].id == "sampler_weights/sampler-1"
    assert got.last_checkpoint.path == state and got.last_sampler_checkpoint.path == sampler
    for c in got.checkpoints:
        assert c.size > 0 and c.size_bytes == c.size and not c.public and c.training_run_id == trainer.model_id
        assert abs(c.time.timestamp() - time.time()) < 600
    listed = rest.list_checkpoints(trainer.model_id).result()
    assert [c.path for c in listed.checkpoints] == [state, sampler]
    assert rest.get_training_run_by_tinker_path(state.replace("mint", "tinker")).result().id == trainer.model_id
    with pytest.raises(mint.NotFoundError):
        rest.get_training_run("no-such-run").result()


def test_list_training_runs_pages(rest, run, tiny_llama):
    trainer, _, _ = run
    service = mint.ServiceClient()
    more = [service.create_lora_training_client(base_model=tiny_llama, rank=1, seed=i) for i in range(3)]
    page1 = rest.list_training_runs(limit=2).result()
    page2 = rest.list_training_runs(limit=2, offset=2).result()
    assert page1.cursor.total_count == 4 and (page1.cursor.limit, page2.cursor.offset) == (2, 2)
    ids = [r.id for r in page1.training_runs + page2.training_runs]
    assert ids == [m.model_id for m in reversed(more)] + [trainer.model_id]  # newest first
    with pytest.raises(mint.BadRequestError, match="limit"):
        rest.list_training_runs(limit=0).result()
    with pytest.raises(mint.BadRequestError, match="access_scope"):
        rest.list_training_runs(access_scope="all").result()
    for m in more:
        m._engine.submit(m._engine.release_training_adapter, m.model_id).result()


def test_delete(rest, run):
    trainer, state, sampler = run
    rest.delete_checkpoint(trainer.model_id, "weights/state-1").result()
    rest.delete_checkpoint_from_tinker_path(sampler).result()
    assert rest.list_checkpoints(trainer.model_id).result().checkpoints == []
    with pytest.raises(mint.NotFoundError):
        trainer.load_state(state).result()
    with pytest.raises(mint.NotFoundError):
        rest.delete_checkpoint(state).result()
    with pytest.raises(mint.BadRequestError, match="checkpoint_id"):
        rest.delete_checkpoint(trainer.model_id, "bogus").result()
    folder = mint.storage.checkpoints.folder_of(mint.engine.adapter_files.parse_path(state))
    assert list(folder.iterdir()) == []


def test_publish_and_other_users(rest, run, monkeypatch):
    trainer, state, sampler = run
    owner = mint.storage.current_user()
    rest.publish_checkpoint_from_tinker_path(sampler).result()
    assert rest.get_weights_info(sampler).result().base_model
    with pytest.raises(mint.ConflictError):
        rest.publish_checkpoint(trainer.model_id, "sampler_weights/sampler-1").result()
    monkeypatch.setenv("MINT_USER", "someone-else")
    with pytest.raises(mint.NotFoundError):
        rest.get_training_run(trainer.model_id).result()  # "owned" scope
    shared = rest.get_training_run(trainer.model_id, access_scope="accessible").result()
    assert [c.path for c in shared.checkpoints] == [sampler] and shared.owner == owner
    assert trainer.model_id in [r.id for r in rest.list_training_runs(access_scope="accessible").result().training_runs]
    mint.ServiceClient().create_sampling_client(model_path=sampler)  # public: loadable
    with pytest.raises(mint.PermissionDeniedError):
        rest.get_weights_info(state).result()
    with pytest.raises(mint.PermissionDeniedError):
        rest.unpublish_checkpoint_from_tinker_path(sampler).result()
    with pytest.raises(mint.PermissionDeniedError):
        rest.delete_checkpoint(sampler).result()
    monkeypatch.setenv("MINT_USER", owner)
    rest.unpublish_checkpoint(sampler).result()
    with pytest.raises(mint.ConflictError):
        rest.unpublish_checkpoint(sampler).result()
    assert not any(c.public for c in rest.list_checkpoints(trainer.model_id).result().checkpoints)


def test_weights_info(rest, run, tiny_llama):
    _, state, sampler = run
    info = rest.get_weights_info(state).result()
    assert (info.base_model, info.is_lora, info.lora_rank, info.checkpoint_type) == (tiny_llama, True, 2, "training")
    assert (info.train_attn, info.train_mlp, info.train_unembed, info.lora_alpha) == (True, True, False, 32.0)
    assert rest.get_weights_info_by_tinker_path(sampler).result().checkpoint_type == "sampler"
    with pytest.raises(mint.BadRequestError, match="tinker_path"):
        rest.get_weights_info("file:///etc/passwd").result()


def test_ttl_and_user_checkpoints(rest, run):
    trainer, state, sampler = run
    listed = rest.list_user_checkpoints(limit=1).result()
    assert listed.cursor.total_count == 2 and [c.path for c in listed.checkpoints] == [sampler]  # newest first
    rest.set_checkpoint_ttl_from_tinker_path(state, 3600).result()
    (c,) = [c for c in rest.list_checkpoints(trainer.model_id).result().checkpoints if c.path == state]
    assert c.expires_at is not None and 3500 < c.expires_at.timestamp() - time.time() <= 3600
    with pytest.raises(mint.BadRequestError, match="ttl_seconds"):
        rest.set_checkpoint_ttl_from_tinker_path(state, -5).result()
    mint.storage.store().set_expiry(trainer.model_id, "weights", "state-1", time.time() - 1)
    assert [c.path for c in rest.list_checkpoints(trainer.model_id).result().checkpoints] == [sampler]
    with pytest.raises(mint.NotFoundError):
        trainer.load_state(state).result()


def test_async_twins(rest, run):
    trainer, state, sampler = run

    async def main():
        got = await rest.get_training_run_async(trainer.model_id)
        runs = await rest.list_training_runs_async(limit=5)
        ckpts = await rest.list_checkpoints_async(trainer.model_id)
        info = await rest.get_weights_info_async(state)
        await rest.publish_checkpoint_from_tinker_path_async(sampler)
        await rest.unpublish_checkpoint_from_tinker_path_async(sampler)
        await rest.delete_checkpoint_async(trainer.model_id, "weights/state-1")
        return got, runs, ckpts, info

    got, runs, ckpts, info = asyncio.run(main())
    assert got.id == trainer.model_id and runs.training_runs[0].id == trainer.model_id
    assert len(ckpts.checkpoints) == 2 and info.lora_rank == 2
    assert [c.path for c in rest.list_checkpoints(trainer.model_id).result().checkpoints] == [sampler]
