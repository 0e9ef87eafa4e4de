"""API keys and ownership: each key is a user; another user's models, requests, runs and private
checkpoints read as "not found" (404, the same answer as for something missing); published checkpoints
are readable by everyone."""

from __future__ import annotations

import types as pytypes

import pytest

from mint.server import ServerConfig, serve
from mint.server.auth import load_keys, owner_of_key
from tests.server.http import call, client, datum, new_model, wait
from tests.server.running import ALICE, BOB, RunningServer


def test_requests_need_a_known_key(server):
    for key in (None, "tml-not-a-configured-key"):
        r = client(server.url, key).post("/create_session", json={"tags": []})
        assert r.status_code == 401 and r.json()["field"] == "X-API-Key"
        assert client(server.url, key).get("/training_runs").status_code == 401
    assert client(server.url, ALICE).get("/healthz").json() == {"status": "ok"}


def test_other_users_see_nothing_private(server, tiny_llama):
    alice, bob = client(server.url, ALICE), client(server.url, BOB)
    _, model = new_model(alice, tiny_llama)
    r = alice.post("/forward_backward", json={"model_id": model, "forward_backward_input": {
        "data": [datum(list(range(3, 12)))], "loss_fn": "cross_entropy"}})
    alice_request = r.json()["request_id"]
    assert "loss:sum" in wait(alice, alice_request)["metrics"]
    path = call(alice, "/save_weights_for_sampler", {"model_id": model, "path": "private"})["path"]
    run = path.split("/")[2]
    assert path == f"tinker://{run}/sampler_weights/private"

    # Bob can't touch Alice's model, request, run or private checkpoint; each reads as missing.
    r = bob.post("/optim_step", json={"model_id": model, "adam_params": {"learning_rate": 1e-3}})
    assert r.status_code == 404
    assert bob.post("/get_info", json={"model_id": model}).status_code == 404
    assert bob.post("/retrieve_future", json={"request_id": alice_request}).status_code == 404
    assert bob.get(f"/training_runs/{run}").status_code == 404
    assert bob.get(f"/training_runs/{run}/checkpoints").status_code == 404
    assert run not in [t["training_run_id"] for t in bob.get("/training_runs").json()["training_runs"]]
    bob_session = bob.post("/create_session", json={"tags": []}).json()["session_id"]
    private = bob.post("/create_sampling_session", json={"session_id": bob_session, "model_path": path})
    missing = bob.post("/create_sampling_session", json={"session_id": bob_session,
                                                         "model_path": path.replace("private", "nothing")})
    assert private.status_code == missing.status_code == 404
    assert private.json()["detail"] == missing.json()["detail"].replace("nothing", "private")
    assert bob.post("/weights_info", json={"tinker_path": path}).status_code == 404
    _, bob_model = new_model(bob, tiny_llama)
    assert bob.post("/load_weights", json={"model_id": bob_model, "path": path, "optimizer": False}).status_code == 404
    assert bob.delete(f"/training_runs/{run}/checkpoints/sampler_weights/private").status_code == 404
    assert bob.post(f"/training_runs/{run}/checkpoints/sampler_weights/private/publish").status_code == 404

    # Published: everyone may sample it and see it; only Alice may unpublish or delete it.
    assert alice.post(f"/training_runs/{run}/checkpoints/sampler_weights/private/publish").status_code == 200
    assert alice.post(f"/training_runs/{run}/checkpoints/sampler_weights/private/publish").status_code == 200  # idempotent
    sampler = bob.post("/create_sampling_session", json={"session_id": bob_session, "model_path": path})
    assert sampler.status_code == 200, sampler.text
    out = call(bob, "/asample", {"sampling_session_id": sampler.json()["sampling_session_id"], "num_samples": 2,
                                 "prompt": {"chunks": [{"tokens": [5, 6, 7]}]},
                                 "sampling_params": {"max_tokens": 3, "seed": 0}})
    assert [len(s["tokens"]) for s in out["sequences"]] == [3, 3] or all(s["stop_reason"] == "stop" for s in out["sequences"])
    listed = bob.get("/training_runs", params={"access_scope": "accessible", "limit": 100}).json()["training_runs"]
    assert run in [t["training_run_id"] for t in listed]
    assert bob.delete(f"/training_runs/{run}/checkpoints/sampler_weights/private/publish").status_code == 404
    # Bob's sampler session is his: Alice can't use it.
    assert alice.get(f"/samplers/{sampler.json()['sampling_session_id']}").status_code == 404
    assert alice.delete(f"/training_runs/{run}/checkpoints/sampler_weights/private").status_code == 200
    assert bob.post("/weights_info", json={"tinker_path": path}).status_code == 404


def test_without_configured_keys_each_key_is_a_user_on_loopback(tiny_llama):
    with RunningServer(ServerConfig(base_models=[tiny_llama], poll_wait_s=1.0)) as srv:
        one, two = client(srv.url, "tml-first-key-123"), client(srv.url, "tml-second-key-45")
        _, model = new_model(one, tiny_llama)
        assert one.post("/get_info", json={"model_id": model}).status_code == 200
        assert two.post("/get_info", json={"model_id": model}).status_code == 404
        runs = one.get("/training_runs").json()["training_runs"]
        assert [r["model_owner"] for r in runs if r["training_run_id"] == model] == [
            owner_of_key("tml-first-key-123")]


def test_no_keys_means_loopback_only():
    from mint.server import deps

    st = pytypes.SimpleNamespace(config=ServerConfig())
    request = pytypes.SimpleNamespace(app=pytypes.SimpleNamespace(state=pytypes.SimpleNamespace(mint=st)),
                                      headers={"x-api-key": "tml-whatever-1"}, client=pytypes.SimpleNamespace(host="10.1.2.3"))
    with pytest.raises(deps.Unauthorized):
        deps.user(request)
    request.client.host = "127.0.0.1"
    assert deps.user(request) == owner_of_key("tml-whatever-1")
    with pytest.raises(SystemExit, match="without API keys"):
        serve("0.0.0.0", 0, ServerConfig())


def test_key_table_compares_whole_keys_and_names_owners(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team\ncarol:tml-carol-secret\n\ntml-anonymous-key\n")
    table = load_keys("dave:tml-dave-secret", keys_file)
    assert table.lookup("tml-carol-secret") == "carol"
    assert table.lookup("tml-dave-secret") == "dave"
    assert table.lookup("tml-anonymous-key") == owner_of_key("tml-anonymous-key")
    assert "tml-anonymous-key" not in owner_of_key("tml-anonymous-key")
    for wrong in ("tml-carol-secre", "tml-carol-secrett", "", None):
        assert table.lookup(wrong) is None
    with pytest.raises(ValueError):
        load_keys("short", None)


def test_concurrent_users_get_their_own_results(server, tiny_llama):
    """Requests of two users pending together (which the engine may run as one pass) come back uncrossed:
    each equals what the same request gives alone."""
    alice, bob = client(server.url, ALICE), client(server.url, BOB)
    models = [new_model(alice, tiny_llama)[1], new_model(bob, tiny_llama)[1]]
    clients = [alice, bob]
    data = [datum(list(range(5, 17))), datum(list(range(30, 37)))]

    def submit(i: int) -> str:
        r = clients[i].post(
            "/forward_backward", json={"model_id": models[i], "forward_only": True,
                                       "forward_backward_input": {"data": [data[i]], "loss_fn": "cross_entropy"}})
        assert r.status_code == 200, r.text
        return r.json()["request_id"]

    together = [submit(0), submit(1)]  # both queued before either is read
    together = [wait(clients[i], rid) for i, rid in enumerate(together)]
    alone = [wait(clients[i], submit(i)) for i in range(2)]
    for t, a in zip(together, alone):
        assert t["metrics"]["loss:sum"] == pytest.approx(a["metrics"]["loss:sum"], rel=1e-6)
        assert t["loss_fn_outputs"][0]["logprobs"]["data"] == pytest.approx(a["loss_fn_outputs"][0]["logprobs"]["data"], abs=1e-6)
    assert len(together[0]["loss_fn_outputs"][0]["logprobs"]["data"]) == 11
    assert len(together[1]["loss_fn_outputs"][0]["logprobs"]["data"]) == 6
