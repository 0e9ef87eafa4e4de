"""Load test (slow): 16 concurrent remote clients train and sample against one ``mint serve`` process.

Checks: no errors; no lost or crossed results (every result has the shapes of the client's own batch and
a loss equal to sum(-logprobs * weights) with the client's own weights; clients come in pairs with the
same seed and data, so mates see the same losses and sampled tokens over the first steps, and every
pair's first steps equal an in-process reference run alone); the server's RSS plateaus; clients killed mid-request (a process with requests in
flight, and a raw socket that sends half a request) do not disturb the others.

``MINT_LOAD_SECONDS`` sets the duration (default 120).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

import mint
from mint import types
from tests.client.test_training import make_data
from tests.server.running import free_port

pytestmark = pytest.mark.slow

CLIENTS = 16
REFERENCE_STEPS = 3
ADAM = types.AdamParams(learning_rate=1e-2, eps=1e-8)
MATCHED_STEPS = 8  # mates (same seed and data) agree to 1e-3 this long; later, batch-dependent rounding
# (different padding widths in different batches) grows through Adam and the trajectories drift apart
PROMPT = [1, 40, 41, 42, 43]
GREEDY = types.SamplingParams(max_tokens=4, temperature=0.0)


def key(i: int) -> str:
    return f"load-client-key-{i:04d}"


def pair_data(pair: int, step: int) -> list[types.Datum]:
    """Each pair's own batch for a step (4 distinct batches per pair, cycled)."""
    return make_data(2, seed=10_000 + 100 * pair + step % 4)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def check_own_result(data: list[types.Datum], out: types.ForwardBackwardOutput) -> None:
    """The result is for ``data``: one logprobs row per datum of its length, and the loss equals
    sum(-logprobs * weights) with this client's weights (another client's result would not)."""
    assert len(out.loss_fn_outputs) == len(data), "wrong number of outputs"
    total = 0.0
    for d, o in zip(data, out.loss_fn_outputs):
        lp = o["logprobs"].to_torch()
        assert list(lp.shape) == [d.model_input.length], "outputs of another datum"
        total += float(-(lp * d.loss_fn_inputs["weights"].to_torch()).sum())
    assert abs(total - out.metrics["loss:sum"]) <= 1e-4 * max(1.0, abs(total)), "loss of another batch"


class Client(threading.Thread):
    """One user: its own API key, session and adapter; trains and samples until ``stop``."""

    def __init__(self, index: int, url: str, base_model: str, stop: threading.Event):
        super().__init__(name=f"load-client-{index}", daemon=True)
        self.index, self.pair = index, index // 2
        self.url, self.base_model, self.stop = url, base_model, stop
        self.losses: list[float] = []
        self.samples: dict[int, list[int]] = {}
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            service = mint.ServiceClient(base_url=self.url, api_key=key(self.index))
            trainer = service.create_lora_training_client(base_model=self.base_model, rank=4, seed=self.pair)
            step = 0
            while not self.stop.is_set():
                data = pair_data(self.pair, step)
                fb = trainer.forward_backward(data)
                opt = trainer.optim_step(ADAM)
                out = fb.result()
                check_own_result(data, out)
                self.losses.append(out.metrics["loss:sum"])
                opt.result()
                if step % 3 == 2:  # a fresh sampler over the new weights, as an RL loop does every step
                    sampler = trainer.save_weights_and_get_sampling_client(f"c{self.index}")
                    self.samples[step] = sampler.sample(PROMPT, 1, GREEDY).result().sequences[0].tokens
                step += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)


_DOOMED = textwrap.dedent("""
    import sys, time
    import mint
    from mint import types
    service = mint.ServiceClient(base_url=sys.argv[1], api_key=sys.argv[2])
    trainer = service.create_lora_training_client(base_model=sys.argv[3], rank=4, seed=0)
    data = [types.Datum(model_input=types.ModelInput.from_ints(list(range(3, 100))),
                        loss_fn_inputs={"target_tokens": list(range(4, 101))})] * 4
    sampler = service.create_sampling_client(base_model=sys.argv[3])
    futures = [trainer.forward_backward(data) for _ in range(2)]
    futures.append(sampler.sample([1, 2, 3], 2, types.SamplingParams(max_tokens=100, temperature=1.0)))
    print("submitted", flush=True)
    futures[-1].result()  # killed while polling
""")


def half_request(port: int) -> None:
    """Send the headers and part of the body of a forward_backward, then drop the connection."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"POST /api/v1/forward_backward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-API-Key: " + key(CLIENTS).encode() + b"\r\nContent-Length: 100000\r\n\r\n{\"model_id\": \"abc\", "
        )


@pytest.fixture(scope="module")
def server(tiny_llama, tmp_path_factory):
    home = tmp_path_factory.mktemp("load_home")
    port = free_port()
    keys = ",".join(f"user{i}:{key(i)}" for i in range(CLIENTS + 1))
    env = {**os.environ, "MINT_HOME": str(home), "MINT_API_KEYS": keys,
           "PYTHONPATH": str(Path(mint.__file__).parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mint", "serve", "--port", str(port), "--base-model", tiny_llama],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/api/v1/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"mint serve did not start: {proc.stderr.read()[-3000:]}")
        time.sleep(0.2)
    yield url, port, proc
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def reference_losses(tiny_llama: str) -> dict[int, list[float]]:
    """Each pair's first steps run in this process, alone: what every client must see."""
    service = mint.ServiceClient()
    out = {}
    for pair in range(CLIENTS // 2):
        trainer = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=pair)
        out[pair] = []
        for step in range(REFERENCE_STEPS):
            out[pair].append(trainer.forward_backward(pair_data(pair, step)).result().metrics["loss:sum"])
            trainer.optim_step(ADAM).result()
        engine = trainer._engine
        engine.submit(engine.release_training_adapter, trainer.model_id).result()
    return out


def test_sixteen_clients_for_minutes(server, tiny_llama):
    url, port, proc = server
    duration = float(os.environ.get("MINT_LOAD_SECONDS", "120"))
    expected = reference_losses(tiny_llama)

    rss: list[tuple[float, float]] = []
    stop, monitor_stop = threading.Event(), threading.Event()

    def monitor():
        start = time.monotonic()
        while not monitor_stop.wait(1.0):
            rss.append((time.monotonic() - start, rss_mb(proc.pid)))

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    clients = [Client(i, url, tiny_llama, stop) for i in range(CLIENTS)]
    for c in clients:
        c.start()

    # Mid-run faults: a client process killed with requests in flight, twice, and half-sent requests.
    env = {**os.environ, "PYTHONPATH": str(Path(mint.__file__).parents[1])}
    killed, started = 0, time.monotonic()
    for when in (duration / 4, duration / 2):
        time.sleep(max(0.0, started + when - time.monotonic()))
        doomed = subprocess.Popen([sys.executable, "-c", _DOOMED, url, key(CLIENTS), tiny_llama],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = doomed.stdout.readline()
        assert line.strip() == "submitted", doomed.stderr.read()[-2000:]
        time.sleep(0.5)
        doomed.kill()
        doomed.wait()
        killed += 1
        for _ in range(3):
            half_request(port)
    time.sleep(max(0.0, started + duration - time.monotonic()))
    stop.set()
    for c in clients:
        c.join(timeout=300)
    monitor_stop.set()
    watcher.join()

    assert killed == 2
    assert httpx.get(url + "/api/v1/healthz", timeout=10).status_code == 200 and proc.poll() is None
    errors = [(c.index, repr(e)) for c in clients for e in c.errors]
    assert not errors, errors
    steps = [len(c.losses) for c in clients]
    print(f"\nload: {CLIENTS} clients, {duration:.0f} s, steps per client {steps}, "
          f"samples {sum(len(c.samples) for c in clients)}")
    assert min(steps) >= REFERENCE_STEPS, steps
    for c in clients:  # not crossed: each client's first steps are its own pair's reference
        for got, want in zip(c.losses, expected[c.pair]):
            assert got == pytest.approx(want, rel=1e-4), (c.index, c.losses[:REFERENCE_STEPS], expected[c.pair])
    for a, b in zip(clients[::2], clients[1::2]):  # and mates agree (losses and sampled tokens)
        n = min(len(a.losses), len(b.losses), MATCHED_STEPS)
        assert a.losses[:n] == pytest.approx(b.losses[:n], rel=1e-3), (a.index, b.index)
        common = {s for s in set(a.samples) & set(b.samples) if s < MATCHED_STEPS}
        assert common and all(a.samples[s] == b.samples[s] for s in common), (a.index, b.index)
    firsts = [expected[p][0] for p in expected]
    assert len({round(x, 4) for x in firsts}) == len(firsts)  # the pairs' data really differ

    # Memory: after warm-up the RSS plateaus. Peaks move with whatever batch is in flight, so the test
    # compares levels: the last third's median is not above the middle third's median + 10 % (+20 MB),
    # and the final RSS is not above the middle third's peak + 10 % (+20 MB).
    values = [v for _, v in rss]
    third = len(values) // 3
    mid, end = sorted(values[third : 2 * third]), sorted(values[2 * third :])
    mid_median, end_median = mid[len(mid) // 2], end[len(end) // 2]
    print(f"server RSS MB: start {values[0]:.0f}, middle third median {mid_median:.0f} / peak {mid[-1]:.0f}, "
          f"last third median {end_median:.0f} / peak {end[-1]:.0f}, final {values[-1]:.0f}; "
          f"series {[round(v) for v in values[:: max(1, len(values) // 12)]]}")
    assert end_median <= mid_median * 1.10 + 20, (mid_median, end_median)
    assert values[-1] <= mid[-1] * 1.10 + 20, (mid[-1], values[-1])
