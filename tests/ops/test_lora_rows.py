"""mint::lora_rows_ (per-row fused LoRA for decode batches) against a float64 per-row reference."""

from __future__ import annotations

import pytest
import torch

from mint import ops


def pool(n=5, r=8, d_in=37, d_out=29, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, r, d_in, generator=gen)
    b = torch.randn(n, r, d_out, generator=gen)
    ranks = torch.tensor([8, 3, 0, 5, 8][:n], dtype=torch.int64)
    scales = torch.tensor([0.5, 2.0, 1.0, 0.25, 4.0][:n], dtype=torch.float32)
    return a, b, ranks, scales


def reference(y, x, a, b, slots, ranks, scales):
    out = y.double().clone()
    for t, n in enumerate(slots.tolist()):
        if n < 0:
            continue
        r = int(ranks[n])
        out[t] += float(scales[n]) * (x[t].double() @ a[n, :r].double().T) @ b[n, :r].double()
    return out


@pytest.mark.parametrize("d_out", [29, 20000])  # 20000: rows are split across threads
def test_matches_reference_any_row_order(d_out):
    a, b, ranks, scales = pool(d_out=d_out)
    gen = torch.Generator().manual_seed(1)
    rows = 300 if d_out > 1000 else 11
    slots = torch.randint(-1, 5, (rows,), generator=gen)
    x = torch.randn(rows, 37, generator=gen)
    y = torch.randn(rows, d_out, generator=gen)
    expected = reference(y, x, a, b, slots, ranks, scales)
    out = ops.lora_rows_(y.clone(), x, a, b, slots, ranks, scales)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-4)
    untouched = (slots < 0) | (slots == 2)  # no adapter, or a slot of rank 0 in this layer
    assert torch.equal(out[untouched], y[untouched])


@pytest.mark.parametrize("d_out", [29, 20000])
def test_a_row_gives_the_same_bits_in_any_batch(d_out):
    a, b, ranks, scales = pool(d_out=d_out)
    gen = torch.Generator().manual_seed(2)
    rows = 64
    slots = torch.randint(-1, 5, (rows,), generator=gen)
    x = torch.randn(rows, 37, generator=gen)
    y = torch.randn(rows, d_out, generator=gen)
    together = ops.lora_rows_(y.clone(), x, a, b, slots, ranks, scales)
    for t in range(0, rows, 7):
        alone = ops.lora_rows_(y[t : t + 1].clone(), x[t : t + 1], a, b, slots[t : t + 1], ranks, scales)
        assert torch.equal(alone[0], together[t])
    perm = torch.randperm(rows, generator=gen)
    shuffled = ops.lora_rows_(y[perm].clone(), x[perm], a, b, slots[perm], ranks, scales)
    assert torch.equal(shuffled, together[perm])


def test_strided_inputs_and_row_views():
    a, b, ranks, scales = pool()
    x = torch.randn(6, 74)[:, ::2]  # non-unit stride in the feature dim
    y_big = torch.randn(6, 40)
    y = y_big[:, 5:34]  # a column slice: row stride 40
    slots = torch.tensor([0, 1, -1, 3, 4, 0])
    expected = reference(y, x, a, b, slots, ranks, scales)
    ops.lora_rows_(y, x, a, b, slots, ranks, scales)
    torch.testing.assert_close(y_big[:, 5:34].double(), expected, rtol=1e-5, atol=1e-4)


def test_bad_arguments_name_the_field():
    a, b, ranks, scales = pool()
    x, y = torch.randn(3, 37), torch.randn(3, 29)
    with pytest.raises(RuntimeError, match="row_slot\\[1\\] = 5 is out of range"):
        ops.lora_rows_(y, x, a, b, torch.tensor([0, 5, 1]), ranks, scales)
    with pytest.raises(RuntimeError, match="row_slot must be a 1-D int64 tensor of T = 3"):
        ops.lora_rows_(y, x, a, b, torch.tensor([0, 1]), ranks, scales)
    with pytest.raises(RuntimeError, match="lora_ranks\\[0\\] = 9 is out of range"):
        ops.lora_rows_(y, x, a, b, torch.tensor([0, 1, 1]), torch.tensor([9, 1, 1, 1, 1]), scales)
    with pytest.raises(RuntimeError, match="must be float32"):
        ops.lora_rows_(y.double(), x.double(), a.double(), b.double(), torch.tensor([0, 1, 1]), ranks, scales)
    with pytest.raises(RuntimeError, match="lora_a must be \\[N, R, in\\] with in = 37"):
        ops.lora_rows_(y, x, a[:, :, :30], b, torch.tensor([0, 1, 1]), ranks, scales)
    before = y.clone()
    with pytest.raises(RuntimeError, match="not differentiable"):
        ops.lora_rows_(y, x, a.requires_grad_(), b, torch.tensor([0, 1, 1]), ranks, scales)
    assert torch.equal(y, before)
