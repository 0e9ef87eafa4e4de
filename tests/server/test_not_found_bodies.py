"""Another user's resource is indistinguishable from a missing one: for every kind of resource (training
model, request, run, checkpoint, sampler) and every route that names one, the whole response (status,
headers that matter, body with the id written generically) is the same for another user's id as for an
id that does not exist. Also: mint's own failures answer a bare 500 (no exception name, message or trace),
and a ServerConfig never shows its API keys."""

from __future__ import annotations

import pytest

from mint.server import ServerConfig, create_app
from mint.server.auth import load_keys
from tests.server.http import call, client, datum, new_model
from tests.server.running import ALICE, BOB, KEYS

MISSING_RUN = "0123456789abcdef"
MISSING_ID = "fedcba9876543210fedcba9876543210"


def _shape(response, *ids: str) -> tuple:
    """(status, retry header, body with each of ``ids`` replaced by <id>)."""
    text = response.text
    for i in ids:
        text = text.replace(i, "<id>")
    return response.status_code, response.headers.get("x-should-retry"), text


@pytest.fixture(scope="module")
def alices(server, tiny_llama):
    """Alice's model, request, run, private checkpoints and sampler, and a session of Bob's."""
    alice, bob = client(server.url, ALICE), client(server.url, BOB)
    session, model = new_model(alice, tiny_llama)
    r = alice.post("/forward_backward", json={"model_id": model, "forward_backward_input": {
        "data": [datum(list(range(3, 10)))], "loss_fn": "cross_entropy"}})
    request = r.json()["request_id"]
    sampler_path = call(alice, "/save_weights_for_sampler", {"model_id": model, "path": "hidden"})["path"]
    state_path = call(alice, "/save_weights", {"model_id": model, "path": "hidden"})["path"]
    sampler = alice.post("/create_sampling_session", json={"session_id": session, "model_path": sampler_path})
    bob_session, bob_model = new_model(bob, tiny_llama)
    return {"model": model, "request": request, "run": sampler_path.split("/")[2], "sampler_path": sampler_path,
            "state_path": state_path, "sampler": sampler.json()["sampling_session_id"], "bob_session": bob_session,
            "bob_model": bob_model}


def test_models_requests_and_samplers(server, alices):
    bob = client(server.url, BOB)
    cases = {
        "model": [("POST", "/get_info", lambda i: {"model_id": i}),
                  ("POST", "/optim_step", lambda i: {"model_id": i, "adam_params": {"learning_rate": 1e-3}}),
                  ("POST", "/forward_backward", lambda i: {"model_id": i, "forward_backward_input": {
                      "data": [datum([3, 4, 5])], "loss_fn": "cross_entropy"}}),
                  ("POST", "/save_weights", lambda i: {"model_id": i, "path": "x"}),
                  ("POST", "/save_weights_for_sampler", lambda i: {"model_id": i, "path": "x"})],
        "request": [("POST", "/retrieve_future", lambda i: {"request_id": i})],
        "sampler": [("GET", "/samplers/{}", None), ("DELETE", "/samplers/{}", None),
                    ("POST", "/asample", lambda i: {"sampling_session_id": i, "prompt": {"chunks": [{"tokens": [3]}]},
                                                    "sampling_params": {"max_tokens": 1}})],
    }
    for kind, routes in cases.items():
        for method, route, body in routes:
            answers = []
            for i in (alices[kind], MISSING_ID):
                r = bob.request(method, route.format(i), json=body(i) if body else None)
                answers.append(_shape(r, i))
            assert answers[0] == answers[1], (kind, route, answers)
            status, retry, text = answers[0]
            assert status == 404 and retry == "false" and '"type":"NotFoundError"' in text, answers[0]


def test_runs_and_checkpoints(server, alices):
    bob = client(server.url, BOB)
    run = alices["run"]
    for route in ("/training_runs/{}", "/training_runs/{}/checkpoints"):
        answers = [_shape(bob.get(route.format(i)), i) for i in (run, MISSING_RUN)]
        assert answers[0] == answers[1] and answers[0][0] == 404, answers
        assert '"type":"NotFoundError"' in answers[0][2]

    # A private checkpoint of Alice's, a missing name in Alice's run, a missing run: one answer for all.
    targets = [(run, "sampler_weights", "hidden"), (run, "sampler_weights", "absent"),
               (MISSING_RUN, "sampler_weights", "hidden")]
    requests = [
        ("DELETE", "/training_runs/{r}/checkpoints/{k}/{n}", None),
        ("POST", "/training_runs/{r}/checkpoints/{k}/{n}/publish", None),
        ("DELETE", "/training_runs/{r}/checkpoints/{k}/{n}/publish", None),
        ("PUT", "/training_runs/{r}/checkpoints/{k}/{n}/ttl", lambda p: {"ttl_seconds": 60}),
        ("POST", "/weights_info", lambda p: {"tinker_path": p}),
        ("POST", "/create_sampling_session", lambda p: {"session_id": alices["bob_session"], "model_path": p}),
        ("POST", "/load_weights", lambda p: {"model_id": alices["bob_model"], "path": p, "optimizer": False}),
        ("POST", "/load_weights", lambda p: {"session_id": alices["bob_session"], "model_seq_id": 7, "path": p}),
    ]
    for method, route, body in requests:
        answers = []
        for r, k, n in targets:
            path = f"tinker://{r}/{k}/{n}"
            resp = bob.request(method, route.format(r=r, k=k, n=n), json=body(path) if body else None)
            if resp.status_code == 200 and "request_id" in resp.json():  # load_weights answers through a future
                from tests.server.http import wait

                answers.append(("future", wait(bob, resp.json()["request_id"]), r, n))
                continue
            answers.append(_shape(resp, r, n))
        if answers[0][0] == "future":
            bodies = [{**a[1], "error": a[1]["error"].replace(a[2], "<id>").replace(a[3], "<id>")} for a in answers]
            assert bodies[0] == bodies[1] == bodies[2] and bodies[0]["status_code"] == 404, (route, bodies)
            continue
        assert answers[0] == answers[1] == answers[2], (method, route, answers)
        assert answers[0][0] == 404 and '"type":"NotFoundError"' in answers[0][2], answers[0]
    # The same holds for Alice's private training state.
    r = bob.post("/weights_info", json={"tinker_path": alices["state_path"]})
    assert r.status_code == 404 and '"type":"NotFoundError"' in r.text and "belongs" not in r.text


def test_remote_client_raises_not_found_for_other_users(server, alices):
    import mint

    bob = mint.ServiceClient(base_url=server.url, api_key=BOB)
    rest = bob.create_rest_client()
    for call_ in (lambda: rest.delete_checkpoint(alices["sampler_path"]).result(),
                  lambda: rest.publish_checkpoint_from_tinker_path(alices["sampler_path"]).result(),
                  lambda: rest.set_checkpoint_ttl_from_tinker_path(alices["state_path"], 60).result(),
                  lambda: rest.get_training_run(alices["run"]).result(),
                  lambda: bob.create_training_client_from_state(alices["state_path"])):
        with pytest.raises(mint.NotFoundError) as info:
            call_()
        assert not isinstance(info.value, mint.PermissionDeniedError) and "belongs" not in str(info.value)


def test_internal_errors_answer_a_bare_500(tiny_llama, caplog):
    from fastapi.testclient import TestClient

    app = create_app(ServerConfig(base_models=[tiny_llama], keys=load_keys(KEYS, None)))

    def broken(*args, **kwargs):
        raise KeyError("secret-internal-detail")

    app.state.mint.get_info = broken
    with TestClient(app, raise_server_exceptions=False) as tc:
        r = tc.post("/api/v1/get_info", json={"model_id": "m"}, headers={"X-API-Key": ALICE})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error", "field": None, "type": "InternalServerError"}
    assert "secret-internal-detail" in caplog.text  # the details go to the server log...
    assert ALICE not in caplog.text  # ...which never shows the caller's key
    app.state.mint.close()


def test_server_config_never_shows_keys():
    config = ServerConfig(keys=load_keys(f"{KEYS},tml-unnamed-key-77", None))
    for text in (repr(config), str(config), repr(config.keys)):
        assert ALICE not in text and BOB not in text and "tml-unnamed-key-77" not in text
    assert "alice" in repr(config.keys)
