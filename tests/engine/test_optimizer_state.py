"""AdapterOptimizerState.state_tensors / load_state_tensors: complete, validated before any change."""

from __future__ import annotations

import pytest
import torch

from mint.engine.optimizer import AdapterOptimizerState


def make_state() -> AdapterOptimizerState:
    params = [("l.lora_a", torch.zeros(2, 5)), ("l.lora_b", torch.zeros(2, 3))]
    state = AdapterOptimizerState(params)
    gen = torch.Generator().manual_seed(0)
    for t in (*state.exp_avg, *state.exp_avg_sq):
        t.copy_(torch.rand(t.shape, generator=gen))
    state.steps.copy_(torch.tensor([4, 7]))
    return state


def test_round_trip_is_exact_and_copies():
    src = make_state()
    saved = src.state_tensors()
    assert sorted(saved) == ["exp_avg/l.lora_a", "exp_avg/l.lora_b", "exp_avg_sq/l.lora_a", "exp_avg_sq/l.lora_b", "steps"]
    src.reset_moments()  # the saved tensors are copies, not views
    assert int(saved["steps"].sum()) == 11 and float(saved["exp_avg/l.lora_a"].abs().sum()) > 0
    dst = AdapterOptimizerState([("l.lora_a", torch.zeros(2, 5)), ("l.lora_b", torch.zeros(2, 3))])
    dst.accumulate([torch.ones(2, 5), torch.ones(2, 3)])
    dst.load_state_tensors(saved)
    assert torch.equal(dst.steps, torch.tensor([4, 7])) and not dst.has_grads
    assert all(float(g.abs().sum()) == 0 for g in dst.grads)
    for name, m, v in zip(dst.names, dst.exp_avg, dst.exp_avg_sq):
        assert torch.equal(m, saved[f"exp_avg/{name}"]) and torch.equal(v, saved[f"exp_avg_sq/{name}"])


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda s: s.pop("steps"), "missing"),
        (lambda s: s.update(extra=torch.zeros(1)), "unexpected"),
        (lambda s: s.update({"exp_avg/l.lora_b": torch.zeros(3, 2)}), "exp_avg/l.lora_b"),
        (lambda s: s.update(steps=torch.zeros(2, dtype=torch.int32)), "steps"),
    ],
)
def test_mismatch_changes_nothing(mutate, match):
    saved = make_state().state_tensors()
    mutate(saved)
    dst = make_state()
    before = dst.state_tensors()
    with pytest.raises(ValueError, match=match):
        dst.load_state_tensors(saved)
    after = dst.state_tensors()
    assert all(torch.equal(after[k], before[k]) for k in before)
