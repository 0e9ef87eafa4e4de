"""Runs and checkpoints survive a server restart: they live in the SQLite store and the data directory.

The default test restarts the server in this process (a new app and state: nothing in memory is shared
but the engines' resident base model); the slow one restarts a real ``mint serve`` subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

tinker = pytest.importorskip("tinker")
from tinker import types  # noqa: E402

from mint.server import ServerConfig  # noqa: E402
from mint.server.auth import load_keys  # noqa: E402
from tests.server.http import client  # noqa: E402
from tests.server.running import ALICE, KEYS, RunningServer, free_port  # noqa: E402

os.environ.setdefault("TINKER_TELEMETRY", "0")
TOKENS = list(range(20, 36))
DATUM = types.Datum(model_input=types.ModelInput.from_ints(TOKENS[:-1]),
                    loss_fn_inputs={"target_tokens": TOKENS[1:], "weights": [1.0] * (len(TOKENS) - 1)})
GREEDY = types.SamplingParams(max_tokens=4, temperature=0.0)
PROMPT = types.ModelInput.from_ints(TOKENS[:5])


def _train_and_save(url: str, base_model: str) -> dict:
    service = tinker.ServiceClient(base_url=url, api_key=ALICE)
    trainer = service.create_lora_training_client(base_model=base_model, rank=4, seed=1).result()
    for _ in range(2):
        trainer.forward_backward([DATUM], "cross_entropy").result()
        trainer.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    state = trainer.save_state("after-2").result().path
    sampler_path = trainer.save_weights_for_sampler("after-2").result().path
    loss = trainer.forward([DATUM], "cross_entropy").result().metrics["loss:sum"]
    tokens = service.create_sampling_client(model_path=sampler_path).result().sample(PROMPT, 1, GREEDY).result()
    service.close("success").result()
    return {"run": trainer.model_id, "state": state, "sampler": sampler_path, "loss": loss,
            "tokens": tokens.sequences[0].tokens}


def _check_after_restart(url: str, before: dict) -> None:
    service = tinker.ServiceClient(base_url=url, api_key=ALICE)
    rest = tinker.RestClient(base_url=url, api_key=ALICE)
    runs = rest.list_training_runs(limit=100).result().training_runs
    assert before["run"] in [r.training_run_id for r in runs]
    ids = {c.checkpoint_id for c in rest.list_checkpoints(before["run"]).result().checkpoints}
    assert ids == {"weights/after-2", "sampler_weights/after-2"}
    sampler = service.create_sampling_client(model_path=before["sampler"]).result()
    assert sampler.sample(PROMPT, 1, GREEDY).result().sequences[0].tokens == before["tokens"]
    resumed = service.create_training_client_from_state_with_optimizer(before["state"]).result()
    loss = resumed.forward([DATUM], "cross_entropy").result().metrics["loss:sum"]
    assert loss == pytest.approx(before["loss"], rel=1e-6)
    # The old training model itself lived in the old process's memory only.
    assert client(url, ALICE).post("/get_info", json={"model_id": before["run"]}).status_code == 404
    service.close("success").result()


def test_restart_keeps_runs_and_checkpoints(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("MINT_HOME", str(tmp_path / "home"))
    config = lambda: ServerConfig(base_models=[tiny_llama], keys=load_keys(KEYS, None), poll_wait_s=2.0)  # noqa: E731
    with RunningServer(config()) as srv:
        before = _train_and_save(srv.url, tiny_llama)
    with RunningServer(config()) as srv:
        _check_after_restart(srv.url, before)


def _start(home, base_model: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "MINT_HOME": str(home), "MINT_API_KEYS": KEYS,
           "PYTHONPATH": os.pathsep.join(p for p in [os.path.abspath("python"), os.environ.get("PYTHONPATH")] if p)}
    proc = subprocess.Popen([sys.executable, "-m", "mint", "serve", "--port", str(port), "--base-model", base_model],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/v1/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
    proc.kill()
    raise TimeoutError("mint serve did not start")


@pytest.mark.slow
def test_restart_of_a_real_mint_serve_process(tiny_llama, tmp_path):
    proc, url = _start(tmp_path / "home", tiny_llama)
    try:
        before = _train_and_save(url, tiny_llama)
    finally:
        proc.terminate()
        proc.wait(30)
    proc, url = _start(tmp_path / "home", tiny_llama)
    try:
        _check_after_restart(url, before)
    finally:
        proc.terminate()
        proc.wait(30)
