"""The policy-gradient losses against independent per-token formulas (values and gradients), and their checks."""

from __future__ import annotations

import math

import pytest
import torch

from mint import types
from mint.engine.batching import pack
from mint.engine.losses import LOSSES, resolve
from mint.errors import BadRequestError


def reference_loss(name: str, lp: list[list[float]], slp, adv, config) -> float:
    """Plain-Python per-token sums, one datum and one token at a time (no padding, no tensors)."""
    total = 0.0
    for row_lp, row_s, row_a in zip(lp, slp, adv):
        for l, s, a in zip(row_lp, row_s, row_a):
            ratio = math.exp(l - s)
            if name == "importance_sampling":
                total -= ratio * a
            elif name == "ppo":
                clipped = min(max(ratio, config["clip_low_threshold"]), config["clip_high_threshold"])
                total -= min(ratio * a, clipped * a)
            elif name == "cispo":
                clipped = min(max(ratio, config["clip_low_threshold"]), config["clip_high_threshold"])
                total -= clipped * l * a
            elif name == "dro":
                total -= l * a - 0.5 * config["beta"] * (l - s) ** 2
    return total


def reference_grad(name: str, l: float, s: float, a: float, config) -> float:
    """d(loss)/d(learner logprob) of one token, derived by hand."""
    ratio = math.exp(l - s)
    lo, hi = config.get("clip_low_threshold"), config.get("clip_high_threshold")
    if name == "importance_sampling":
        return -ratio * a
    if name == "ppo":
        clipped = min(max(ratio, lo), hi)
        if ratio * a <= clipped * a:  # the unclipped term is the min: gradient flows
            return -ratio * a
        return 0.0  # the clipped (constant) term is the min
    if name == "cispo":
        return -min(max(ratio, lo), hi) * a
    if name == "dro":
        return -(a - config["beta"] * (l - s))
    raise AssertionError(name)


def random_batch(seed: int, lengths=(5, 9, 3)):
    gen = torch.Generator().manual_seed(seed)
    data, lp, slp, adv = [], [], [], []
    for n in lengths:
        learner = -torch.rand(n, generator=gen, dtype=torch.float64) * 3
        # Sampler logprobs near the learner's, so ratios land both inside and outside [0.8, 1.2].
        sampler = learner + torch.randn(n, generator=gen, dtype=torch.float64) * 0.4
        advantages = torch.randn(n, generator=gen, dtype=torch.float64)
        lp.append(learner.tolist())
        slp.append(sampler.tolist())
        adv.append(advantages.tolist())
        data.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(list(range(3, 3 + n))),
                loss_fn_inputs={
                    "target_tokens": list(range(4, 4 + n)),
                    "logprobs": sampler.float().tolist(),
                    "advantages": advantages.float().tolist(),
                },
            )
        )
    return data, lp, slp, adv


CONFIGS = {
    "importance_sampling": {},
    "ppo": {"clip_low_threshold": 0.85, "clip_high_threshold": 1.1},
    "cispo": {},
    "dro": {"beta": 0.3},
}


@pytest.mark.parametrize("name", ["importance_sampling", "ppo", "cispo", "dro"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_value_and_grad_match_formula(name, seed):
    data, lp, slp, adv = random_batch(seed)
    spec, config = resolve(name, CONFIGS[name])
    batch = pack(data, spec, vocab_size=300, max_context=64)
    learner = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
    for i, row in enumerate(lp):
        learner[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
    # Padding gets wild learner values: they must not leak into the value or the gradient.
    learner = torch.where(batch.mask, learner, torch.full_like(learner, 50.0)).requires_grad_(True)
    loss, _ = spec.fn(learner, batch.inputs, batch.mask, config)
    (grad,) = torch.autograd.grad(loss, learner)

    sampler32 = [[float(torch.tensor(v, dtype=torch.float32)) for v in row] for row in slp]
    adv32 = [[float(torch.tensor(v, dtype=torch.float32)) for v in row] for row in adv]
    lp32 = [[float(torch.tensor(v, dtype=torch.float32)) for v in row] for row in lp]
    expected = reference_loss(name, lp32, sampler32, adv32, config)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    for i, row in enumerate(lp32):
        for j, l in enumerate(row):
            g = reference_grad(name, l, sampler32[i][j], adv32[i][j], config)
            assert float(grad[i, j]) == pytest.approx(g, rel=1e-5, abs=1e-6), (i, j)
        assert bool((grad[i, len(row) :] == 0).all())


def test_ppo_defaults_and_clipping_regions():
    spec, config = resolve("ppo", None)
    assert config == {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}
    _, cispo_config = resolve("cispo", {"clip_high_threshold": 2.0})
    assert cispo_config == {"clip_low_threshold": 0.8, "clip_high_threshold": 2.0}
    # One token per case: ratio 1.5 with A > 0 is clipped (zero grad); with A < 0 it is not.
    mask = torch.ones(1, 2, dtype=torch.bool)
    lp = torch.full((1, 2), math.log(1.5), requires_grad=True)
    inputs = {"logprobs": torch.zeros(1, 2), "advantages": torch.tensor([[1.0, -1.0]])}
    loss, _ = spec.fn(lp, inputs, mask, config)
    (g,) = torch.autograd.grad(loss, lp)
    assert float(loss.detach()) == pytest.approx(-(1.2 * 1.0) + 1.5 * 1.0)
    assert float(g[0, 0]) == 0.0 and float(g[0, 1]) == pytest.approx(1.5)


@pytest.mark.parametrize(
    "name, config, field",
    [
        ("nonsense", None, "loss_fn"),
        (None, None, "loss_fn"),
        ("ppo", {"clip_low": 0.5}, "loss_fn_config.clip_low"),
        ("importance_sampling", {"beta": 0.1}, "loss_fn_config.beta"),
        ("dro", None, "loss_fn_config.beta"),
        ("dro", {"beta": float("nan")}, "loss_fn_config.beta"),
        ("ppo", {"clip_high_threshold": "1.2"}, "loss_fn_config.clip_high_threshold"),
        ("ppo", {"clip_low_threshold": 1.5}, "loss_fn_config.clip_low_threshold"),
        ("ppo", [0.8], "loss_fn_config"),
    ],
)
def test_bad_loss_names_and_configs(name, config, field):
    with pytest.raises(BadRequestError) as err:
        resolve(name, config)
    assert field in str(err.value)


@pytest.mark.parametrize("name", ["importance_sampling", "ppo", "cispo", "dro"])
def test_missing_and_mismatched_inputs_name_datum_and_key(name):
    spec = LOSSES[name]
    data, *_ = random_batch(0)
    missing = data[1].model_copy(deep=True)
    missing.loss_fn_inputs.pop("advantages")
    with pytest.raises(BadRequestError) as err:
        pack([data[0], missing], spec, 300, 64)
    assert "data[1].loss_fn_inputs.advantages" in str(err.value)
    short = types.Datum(
        model_input=types.ModelInput.from_ints([5, 6, 7]),
        loss_fn_inputs={"target_tokens": [6, 7, 8], "logprobs": [0.0, 0.0], "advantages": [1.0, 1.0, 1.0]},
    )
    with pytest.raises(BadRequestError) as err:
        pack([data[0], data[1], short], spec, 300, 64)
    assert "data[2].loss_fn_inputs.logprobs" in str(err.value)
    extra = types.Datum(
        model_input=types.ModelInput.from_ints([5, 6, 7]),
        loss_fn_inputs={"target_tokens": [6, 7, 8], "logprobs": [0.0] * 3, "advantages": [1.0] * 3, "weights": [1.0] * 3},
    )
    with pytest.raises(BadRequestError) as err:
        pack([extra], spec, 300, 64)
    assert "data[0].loss_fn_inputs" in str(err.value) and "weights" in str(err.value)
