"""What the server holds stays bounded: sessions release their models and samplers when finished or
silent too long, per-user limits, and the request registry drops results after retrieval or expiry."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future

import pytest

from mint.server import ServerConfig
from mint.server.futures import FutureRegistry, RegistryFullError
from tests.server.http import client, new_model
from tests.server.running import RunningServer


def test_finishing_a_session_releases_its_models_and_samplers(server, tiny_llama):
    c = client(server.url, "tml-alice-key-0001")
    session, model = new_model(c, tiny_llama)
    engine = server.app.state.mint.models[model].engine
    sampler = c.post("/create_sampling_session", json={"session_id": session, "base_model": tiny_llama}).json()
    assert model in engine._adapters and c.get(f"/samplers/{sampler['sampling_session_id']}").status_code == 200
    assert c.post("/session_heartbeat", json={"session_id": session}).status_code == 200
    assert c.post(f"/sessions/{session}/finish").status_code == 200
    engine.submit(lambda: None).result()  # the release runs on the engine's worker, in order
    assert model not in engine._adapters
    assert c.post("/get_info", json={"model_id": model}).status_code == 404
    assert c.get(f"/samplers/{sampler['sampling_session_id']}").status_code == 404
    assert c.post("/session_heartbeat", json={"session_id": session}).status_code == 404
    assert c.post("/create_model", json={"session_id": session, "base_model": tiny_llama}).status_code == 404


def test_silent_sessions_expire_and_users_have_limits(tiny_llama):
    config = ServerConfig(base_models=[tiny_llama], session_ttl_s=1.0, max_models_per_user=1, poll_wait_s=1.0)
    with RunningServer(config) as srv:
        c = client(srv.url, "tml-some-key-123")
        session, model = new_model(c, tiny_llama)
        r = c.post("/create_model", json={"session_id": session, "base_model": tiny_llama, "lora_config": {"rank": 2}})
        assert r.status_code == 400 and r.json()["field"] == "session_id" and "limit" in r.json()["detail"]
        assert client(srv.url, "tml-other-key-456").post("/create_session", json={}).status_code == 200
        time.sleep(1.2)
        fresh = c.post("/create_session", json={}).json()["session_id"]  # sweeps the silent session
        assert c.post("/get_info", json={"model_id": model}).status_code == 404
        r = c.post("/create_model", json={"session_id": fresh, "base_model": tiny_llama, "lora_config": {"rank": 2}})
        assert r.status_code == 200


def test_registry_bounds_and_expiry():
    reg = FutureRegistry(max_pending=2, result_ttl_s=0.3, retrieved_grace_s=0.1)
    pending, done = Future(), Future()
    done.set_result(1)
    a = reg.add("alice", pending)
    b = reg.add("alice", done)
    assert reg.get(a, "bob") is None and reg.get(a, "alice") is not None
    with pytest.raises(RegistryFullError):
        reg.reserve()
    entry = reg.get(b, "alice")
    reg.mark_retrieved(entry)
    time.sleep(0.15)
    reg.reserve()  # b was retrieved more than the grace period ago: dropped
    assert reg.get(b, "alice") is None and len(reg) == 1
    c = reg.add("alice", done)
    reg.mark_retrieved(reg.get(c, "alice"))
    reg.reserve()  # full again, but c is retrieved: it is dropped early instead of refusing the request
    assert reg.get(c, "alice") is None and len(reg) == 1
    assert asyncio.run(reg.wait(reg.get(a, "alice"), 0.05)) is False
    pending.set_exception(ValueError("boom"))
    assert asyncio.run(reg.wait(reg.get(a, "alice"), 0.05)) is True
    time.sleep(0.35)  # finished and never retrieved: dropped after result_ttl_s
    assert reg.sweep() == 1 and len(reg) == 0
