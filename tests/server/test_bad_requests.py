"""Bad input gets a 4xx with a JSON body naming the field, never a 500; request bodies are bounded."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from mint.server import ServerConfig
from tests.server.http import call, client, datum, new_model, wait
from tests.server.running import ALICE, RunningServer

ROUTES = {
    "/create_session": ["tags", "user_metadata", "sdk_version"],
    "/session_heartbeat": ["session_id"],
    "/create_model": ["session_id", "model_seq_id", "base_model", "lora_config", "user_metadata", "optimizer_config"],
    "/get_info": ["model_id"],
    "/forward_backward": ["model_id", "seq_id", "forward_backward_input", "forward_only"],
    "/optim_step": ["model_id", "seq_id", "adam_params"],
    "/save_weights": ["model_id", "path", "ttl_seconds"],
    "/save_weights_for_sampler": ["model_id", "path", "sampling_session_seq_id", "ttl_seconds"],
    "/load_weights": ["model_id", "session_id", "model_seq_id", "path", "optimizer"],
    "/create_sampling_session": ["session_id", "base_model", "model_path"],
    "/asample": ["sampling_session_id", "num_samples", "prompt", "sampling_params", "prompt_logprobs",
                 "topk_prompt_logprobs"],
    "/retrieve_future": ["request_id", "allow_metadata_only"],
    "/weights_info": ["tinker_path"],
}


def _junk(rng: random.Random, live: dict, depth: int = 0):
    choices = [
        lambda: None, lambda: True, lambda: -1, lambda: 0, lambda: 10**30, lambda: 1.5, lambda: -1e308,
        lambda: "", lambda: "../../etc/passwd", lambda: "tinker://x/sampler_weights/../y", lambda: "x" * 300,
        lambda: rng.choice(list(live.values())), lambda: [], lambda: {},
    ]
    if depth < 2:
        choices += [
            lambda: [_junk(rng, live, depth + 1) for _ in range(rng.randint(1, 3))],
            lambda: {rng.choice(["rank", "data", "chunks", "tokens", "max_tokens", "learning_rate", "loss_fn",
                                 "model_input", "loss_fn_inputs", "temperature"]): _junk(rng, live, depth + 1)
                     for _ in range(rng.randint(1, 3))},
            lambda: {"data": [datum([1, 2, 3])], "loss_fn": rng.choice(["ppo", "nope", "cross_entropy"]),
                     "loss_fn_config": {"beta": _junk(rng, live, depth + 1)}},
            lambda: {"chunks": [{"tokens": [rng.choice([-5, 10**9, 3])]}]},
            lambda: {"max_tokens": rng.choice([0, -1, 10**12, "a"]), "temperature": rng.choice([-1.0, 1.0])},
            lambda: {"rank": rng.choice([0, 65, -3, "8", 4]), "seed": rng.choice([None, 2**64, -1])},
            lambda: {"max_tokens": 2, "seed": rng.choice([2**70, -(2**70), 0]), "top_k": rng.choice([10**20, 5])},
        ]
    return rng.choice(choices)()


def _valid_bodies(live: dict) -> dict:
    prompt = {"chunks": [{"tokens": [3, 4, 5]}]}
    return {
        "/create_session": {"tags": [], "user_metadata": None, "sdk_version": "x"},
        "/session_heartbeat": {"session_id": live["session_id"]},
        "/create_model": {"session_id": live["session_id"], "model_seq_id": 1, "base_model": live["base_model"],
                          "lora_config": {"rank": 2}},
        "/get_info": {"model_id": live["model_id"]},
        "/forward_backward": {"model_id": live["model_id"], "seq_id": 1,
                              "forward_backward_input": {"data": [datum([1, 2, 3])], "loss_fn": "cross_entropy"}},
        "/optim_step": {"model_id": live["model_id"], "adam_params": {"learning_rate": 1e-4}},
        "/save_weights": {"model_id": live["model_id"], "path": "fuzz-state"},
        "/save_weights_for_sampler": {"model_id": live["model_id"], "path": "fuzz-sampler"},
        "/load_weights": {"model_id": live["model_id"], "path": live["state_path"], "optimizer": True},
        "/create_sampling_session": {"session_id": live["session_id"], "model_path": live["sampler_path"]},
        "/asample": {"sampling_session_id": live["sampling_session_id"], "num_samples": 1, "prompt": prompt,
                     "sampling_params": {"max_tokens": 2}},
        "/retrieve_future": {"request_id": "0" * 32},
        "/weights_info": {"tinker_path": live["sampler_path"]},
    }


def _check(r: httpx.Response, c: httpx.Client) -> None:
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        body = r.json()
        assert body["detail"] and "type" in body, body
    elif "request_id" in r.json():  # accepted: whatever happens later must not be a server error
        out = wait(c, r.json()["request_id"])
        if "error" in out:
            assert out["category"] == "user", out


def test_fuzzed_bodies_never_cause_server_errors(server, tiny_llama):
    c = client(server.url, ALICE)
    session, model = new_model(c, tiny_llama)
    sampler = c.post("/create_sampling_session", json={"session_id": session, "base_model": tiny_llama}).json()
    live = {"session_id": session, "model_id": model, "base_model": tiny_llama,
            "sampling_session_id": sampler["sampling_session_id"],
            "state_path": call(c, "/save_weights", {"model_id": model, "path": "fuzz-base"})["path"],
            "sampler_path": call(c, "/save_weights_for_sampler", {"model_id": model, "path": "fuzz-base"})["path"]}
    rng = random.Random(0)
    valid = _valid_bodies(live)
    for route, fields in ROUTES.items():
        for raw in (b"", b"not json", b"[]", b"null", b"{", b'{"model_id": ', json.dumps({"x": 1}).encode()):
            _check(c.post(route, content=raw, headers={"content-type": "application/json"}), c)
        for _ in range(6):  # junk everywhere
            _check(c.post(route, json={f: _junk(rng, live) for f in fields if rng.random() < 0.8}), c)
        for _ in range(10):  # a valid body with one or two fields broken, to reach the deeper checks
            body = dict(valid[route])
            for f in rng.sample(fields, min(len(fields), rng.randint(1, 2))):
                body[f] = _junk(rng, live)
            _check(c.post(route, json=body), c)
    # The model still trains after all that.
    out = call(c, "/forward_backward", {"model_id": model, "forward_backward_input": {"data": [datum([4, 5, 6, 7])]}})
    assert out["metrics"]["loss:sum"] > 0
    for bad in (b"\x00\xff garbage", b"\x0a\x05hello\x12\x02\x0a\x00"):
        _check(c.post("/forward_backward", content=bad, headers={"content-type": "application/x-protobuf"}), c)
    for params in ({"limit": -1}, {"limit": "x"}, {"offset": -5}, {"access_scope": "everyone"}):
        _check(c.get("/training_runs", params=params), c)
    for path in ("/training_runs/nope/checkpoints/weights/x/publish", "/training_runs/a/checkpoints/bad/publish"):
        _check(c.post(path), c)
    _check(c.put("/training_runs/a/checkpoints/weights/x/ttl", json={"ttl_seconds": -3}), c)


def test_errors_name_the_field(server, tiny_llama):
    c = client(server.url, ALICE)
    session, model = new_model(c, tiny_llama)

    def field_of(route: str, body: dict) -> str:
        r = c.post(route, json=body)
        assert r.status_code == 400, r.text
        return r.json()["field"]

    base = {"session_id": session, "base_model": tiny_llama}
    assert field_of("/create_model", {**base, "lora_config": {"rank": 0}}) == "lora_config.rank"
    assert field_of("/create_model", {**base, "base_model": "/etc"}) == "base_model"
    assert field_of("/create_model", {"session_id": session}) == "base_model"
    assert field_of("/optim_step", {"model_id": model, "adam_params": {"learning_rate": -1}}) == "adam_params.learning_rate"
    assert field_of("/save_weights", {"model_id": model, "path": "../up"}) == "path"
    assert field_of("/load_weights", {"model_id": model, "path": "/etc/passwd", "optimizer": False}) == "path"
    sampler = c.post("/create_sampling_session", json=base).json()["sampling_session_id"]
    prompt = {"chunks": [{"tokens": [1, 2]}]}
    assert field_of("/asample", {"sampling_session_id": sampler, "prompt": prompt, "sampling_params": {}}) == \
        "sampling_params.max_tokens"
    assert field_of("/asample", {"sampling_session_id": sampler, "prompt": prompt, "num_samples": 0,
                                 "sampling_params": {"max_tokens": 2}}) == "num_samples"
    for sp, field in (({"max_tokens": 2, "seed": 10**30}, "sampling_params.seed"),
                      ({"max_tokens": 2, "top_k": 10**20}, "sampling_params.top_k")):
        assert field_of("/asample", {"sampling_session_id": sampler, "prompt": prompt, "sampling_params": sp}) == field
    assert field_of("/create_model", {**base, "lora_config": {"rank": 2, "seed": 2**64}}) == "lora_config.seed"
    assert field_of("/asample", {"sampling_session_id": sampler, "prompt": prompt, "topk_sample_logprobs": 3,
                                 "sampling_params": {"max_tokens": 2}}) == "topk_sample_logprobs"
    bad = datum([1, 2, 3, 4])
    bad["loss_fn_inputs"]["target_tokens"] = {"data": [1, 2], "dtype": "int64", "shape": [2]}
    r = c.post("/forward_backward", json={"model_id": model, "forward_backward_input": {"data": [bad]}})
    out = wait(c, r.json()["request_id"])
    assert out["category"] == "user" and "data[0]" in out["error"] and "target_tokens" in out["error"]


def test_request_bodies_are_bounded(tiny_llama):
    zstd = pytest.importorskip("zstandard")
    with RunningServer(ServerConfig(base_models=[tiny_llama], max_body_bytes=2000)) as srv:
        c = client(srv.url, "tml-some-key-123")
        ok = c.post("/create_session", json={"tags": ["a"] * 10})
        assert ok.status_code == 200
        big = c.post("/create_session", json={"tags": ["a"] * 1000})
        assert big.status_code == 413 and big.json()["field"] == "body"

        def chunks():  # no content-length: the limit still applies while streaming
            for _ in range(100):
                yield b" " * 100

        assert c.post("/create_session", content=chunks(), headers={"content-type": "application/json"}).status_code == 413
        bomb = zstd.ZstdCompressor().compress(json.dumps({"tags": ["a" * 100] * 1000}).encode())
        assert len(bomb) < 2000
        r = c.post("/create_session", content=bomb, headers={"content-type": "application/json", "content-encoding": "zstd"})
        assert r.status_code == 413
        small = zstd.ZstdCompressor().compress(b'{"tags": ["z"]}')
        r = c.post("/create_session", content=small, headers={"content-type": "application/json", "content-encoding": "zstd"})
        assert r.status_code == 200, r.text
        assert c.post("/create_session", content=b"xx", headers={"content-encoding": "zstd"}).status_code == 400
