"""mint::adamw_ and FusedAdamW against torch.optim.AdamW(foreach=False) (+ clip_grad_norm_) as reference.

Tolerances:
- float32: params rtol 1e-6 / atol 1e-7; moments rtol 1e-6 / atol 1e-6 * max|moment| (one ulp of
  difference in a clip coefficient or an fma is a large relative error where a moment cancels to ~0).
  mint follows torch's operation order and scalar rounding; what differs is sqrt (mint's is correctly
  rounded, torch's CPU sqrt goes through MKL and may be 1 ulp off), with clipping the norm (mint sums
  in double), and in a build without AVX2/FMA the lerp (torch's is an fma).
- bfloat16 / float16 storage: the reference upcasts params, grads and moments to float32, runs the
  float32 torch step and casts back; results agree within one unit in the last place of the storage
  dtype (rtol = dtype eps, plus atol 1e-7 for fp16 subnormals).
"""

from __future__ import annotations

import copy
import re

import pytest
import torch

import mint.ops  # noqa: F401  (loads the extension, registers the fake kernel)
from mint.ops.adam import FusedAdamW, fused_adamw

F32_P = dict(rtol=1e-6, atol=1e-7)
TOL_REDUCED = {
    torch.bfloat16: dict(rtol=2.0**-7, atol=1e-7),
    torch.float16: dict(rtol=2.0**-10, atol=1e-7),
}


def hp_rows(*groups):
    """float64 [G, 6] from dicts with lr, betas, eps, weight_decay and optional max_grad_norm."""
    rows = [
        [g["lr"], g["betas"][0], g["betas"][1], g["eps"], g["weight_decay"], g.get("max_grad_norm", 0.0)]
        for g in groups
    ]
    return torch.tensor(rows, dtype=torch.float64)


def torch_kwargs(g):
    return dict(lr=g["lr"], betas=g["betas"], eps=g["eps"], weight_decay=g["weight_decay"], foreach=False)


class MintState:
    """Flat op inputs for a list of parameters, moments zero-initialised in `moment_dtype`."""

    def __init__(self, params, group_ids, hyper, moment_dtype=None):
        self.params = [p.detach().clone() for p in params]
        self.exp_avgs = [torch.zeros_like(p, dtype=moment_dtype or p.dtype) for p in params]
        self.exp_avg_sqs = [torch.zeros_like(p, dtype=moment_dtype or p.dtype) for p in params]
        self.steps = torch.zeros(len(params), dtype=torch.int64)
        self.group_ids = torch.tensor(group_ids, dtype=torch.int64)
        self.hyper = hyper

    def step(self, grads):
        return fused_adamw(
            self.params, grads, self.exp_avgs, self.exp_avg_sqs, self.steps, self.group_ids, self.hyper
        )


def torch_run(params, grad_seq, group, clip=0.0):
    """torch AdamW (after clip_grad_norm_ when clip > 0) over each step's grads -> (params, opt, norms)."""
    ref = [p.detach().clone().requires_grad_() for p in params]
    opt = torch.optim.AdamW(ref, **torch_kwargs(group))
    norms = []
    for grads in grad_seq:
        for p, g in zip(ref, grads):
            p.grad = None if g is None else g.clone()
        if clip > 0:
            norms.append(torch.nn.utils.clip_grad_norm_([p for p in ref if p.grad is not None], clip))
        opt.step()
    return ref, opt, norms


def assert_close_scaled(got, want, rtol=1e-6, scale=None):
    """rtol 1e-6, plus an atol of rtol times `scale` (default: the tensor's largest magnitude), since
    moments cancel to ~0."""
    if scale is None:
        scale = want.abs().max().item() if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=rtol, atol=max(rtol * scale, 1e-12))


def assert_matches_torch(state, idx, ref_param, opt):
    torch.testing.assert_close(state.params[idx], ref_param.detach(), **F32_P)
    s = opt.state[ref_param]
    assert_close_scaled(state.exp_avgs[idx], s["exp_avg"])
    assert_close_scaled(state.exp_avg_sqs[idx], s["exp_avg_sq"])
    assert state.steps[idx].item() == int(s["step"].item())


GROUP_A = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
GROUP_B = dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-12, weight_decay=0.1)
GROUP_C = dict(lr=5e-3, betas=(0.6, 0.9), eps=1e-6, weight_decay=0.0)  # beta1 < 0.5: lerp's other branch


@pytest.mark.parametrize("shape", [(1,), (), (278011,), (17,), (3, 5, 7), (64, 33)])
def test_single_tensor_matches_torch(shape):
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(shape, generator=gen)
    grad_seq = [[torch.randn(shape, generator=gen)] for _ in range(7)]
    ref, opt, _ = torch_run([p0], grad_seq, GROUP_A)
    st = MintState([p0], [0], hp_rows(GROUP_A))
    for grads in grad_seq:
        st.step(grads)
    assert_matches_torch(st, 0, ref[0], opt)


def test_non_contiguous_grad_is_accepted_and_not_modified():
    gen = torch.Generator().manual_seed(11)
    p0 = torch.randn(6, 9, generator=gen)
    g = torch.randn(9, 6, generator=gen).t()
    g_before = g.clone()
    ref, opt, _ = torch_run([p0], [[g]], GROUP_B)
    st = MintState([p0], [0], hp_rows(GROUP_B))
    st.step([g])
    assert_matches_torch(st, 0, ref[0], opt)
    assert torch.equal(g, g_before)


def test_grad_none_is_untouched_and_step_not_advanced():
    gen = torch.Generator().manual_seed(1)
    p0 = [torch.randn(100, generator=gen), torch.randn(31, generator=gen)]
    st = MintState(p0, [0, 0], hp_rows(GROUP_B))
    st.exp_avgs[1].normal_(generator=gen)
    st.exp_avg_sqs[1].uniform_(generator=gen)
    st.steps[1] = 5
    before = [st.params[1].clone(), st.exp_avgs[1].clone(), st.exp_avg_sqs[1].clone()]
    grad_seq = [[torch.randn(100, generator=gen), None] for _ in range(3)]
    for grads in grad_seq:
        st.step(grads)
    for got, want in zip([st.params[1], st.exp_avgs[1], st.exp_avg_sqs[1]], before):
        assert torch.equal(got, want)
    assert st.steps.tolist() == [3, 5]
    ref, opt, _ = torch_run(p0[:1], [g[:1] for g in grad_seq], GROUP_B)
    assert_matches_torch(st, 0, ref[0], opt)


def test_empty_and_zero_dim_tensors_in_the_list():
    gen = torch.Generator().manual_seed(2)
    shapes = [(0,), (), (5, 0, 3), (4099,), ()]
    p0 = [torch.randn(s, generator=gen) for s in shapes]
    grad_seq = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(4)]
    ref, opt, _ = torch_run(p0, grad_seq, GROUP_A)
    st = MintState(p0, [0] * len(shapes), hp_rows(GROUP_A))
    for grads in grad_seq:
        norms = st.step(grads)
    for i in range(len(shapes)):
        assert st.params[i].shape == shapes[i]
        assert_matches_torch(st, i, ref[i], opt)
    want_norm = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grad_seq[-1]]).double())
    torch.testing.assert_close(norms, want_norm.float().reshape(1), rtol=1e-6, atol=0)


def test_empty_parameter_list_returns_zero_norms():
    st = MintState([], [], hp_rows(GROUP_A, dict(GROUP_B, max_grad_norm=1.0)))
    norms = st.step([])
    assert norms.dtype == torch.float32 and norms.tolist() == [0.0, 0.0]


def test_three_adapters_in_one_call_match_separate_torch_runs_over_7_steps():
    gen = torch.Generator().manual_seed(3)
    groups = [GROUP_A, GROUP_B, GROUP_C]
    group_ids = [0, 1, 0, 2, 1, 1, 2, 0]
    shapes = [(16, 8), (8, 16), (3,), (5, 7), (), (1000,), (33,), (2049,)]
    p0 = [torch.randn(s, generator=gen) for s in shapes]
    grad_seq = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(7)]
    st = MintState(p0, group_ids, hp_rows(*groups))
    for grads in grad_seq:
        st.step(grads)
    for gi, group in enumerate(groups):
        idx = [i for i, g in enumerate(group_ids) if g == gi]
        ref, opt, _ = torch_run([p0[i] for i in idx], [[gs[i] for i in idx] for gs in grad_seq], group)
        for j, i in enumerate(idx):
            assert_matches_torch(st, i, ref[j], opt)
    assert st.steps.tolist() == [7] * len(shapes)


def test_defaults_follow_adam_params():
    mine = [p.requires_grad_() for p in _model_params(12)]
    opt = FusedAdamW(mine)
    d = opt.defaults
    assert (d["lr"], d["betas"], d["eps"], d["weight_decay"], d["max_grad_norm"]) == (
        1e-4, (0.9, 0.95), 1e-12, 0.0, 0.0)
    ref = [p.detach().clone().requires_grad_() for p in mine]
    ref_opt = torch.optim.AdamW(ref, lr=1e-4, betas=(0.9, 0.95), eps=1e-12, weight_decay=0.0, foreach=False)
    for t in range(3):
        _set_grads(mine, t)
        _set_grads(ref, t)
        opt.step()
        ref_opt.step()
    for p, r in zip(mine, ref):
        torch.testing.assert_close(p.detach(), r.detach(), **F32_P)


def test_weight_decay_is_decoupled():
    # zero gradient, zero moments: AdamW only shrinks p by (1 - lr * wd); L2-coupled Adam would move it
    # by about lr in the direction of -sign(p).
    p0 = torch.tensor([1.5, -2.0, 0.25])
    group = dict(lr=0.01, betas=(0.9, 0.95), eps=1e-12, weight_decay=0.1)
    st = MintState([p0], [0], hp_rows(group))
    st.step([torch.zeros(3)])
    assert torch.equal(st.params[0], p0 * torch.tensor(1 - 0.01 * 0.1, dtype=torch.float32))


def test_per_group_clipping_matches_clip_grad_norm():
    gen = torch.Generator().manual_seed(4)
    groups = [
        dict(GROUP_A, max_grad_norm=0.5),   # clips
        dict(GROUP_B, max_grad_norm=1e6),   # norm below the limit: coefficient 1
        dict(GROUP_C),                      # no clipping; norm still reported
        dict(GROUP_A, max_grad_norm=1.0),   # no grads at all: norm 0
    ]
    group_ids = [0, 1, 2, 0, 1, 2, 3, 0]
    shapes = [(300,), (20, 20), (7,), (65537,), (), (5, 5), (10,), (1,)]
    p0 = [torch.randn(s, generator=gen) for s in shapes]
    grad_seq = [
        [None if gid == 3 else torch.randn(s, generator=gen) * 3 for s, gid in zip(shapes, group_ids)]
        for _ in range(5)
    ]
    st = MintState(p0, group_ids, hp_rows(*groups))
    all_norms = []
    for grads in grad_seq:
        saved = [None if g is None else g.clone() for g in grads]
        all_norms.append(st.step(grads))
        assert all(g is None or torch.equal(g, s) for g, s in zip(grads, saved)), "grads were modified"
    for gi, group in enumerate(groups[:3]):
        idx = [i for i, g in enumerate(group_ids) if g == gi]
        clip = group.get("max_grad_norm", 0.0)
        grads_g = [[gs[i] for i in idx] for gs in grad_seq]
        ref, opt, ref_norms = torch_run([p0[i] for i in idx], grads_g, group, clip)
        for j, i in enumerate(idx):
            assert_matches_torch(st, i, ref[j], opt)
        for t, norms in enumerate(all_norms):
            want = torch.linalg.vector_norm(torch.cat([grad_seq[t][i].reshape(-1) for i in idx]))
            torch.testing.assert_close(norms[gi], want, rtol=1e-6, atol=0)
            if clip > 0:
                torch.testing.assert_close(norms[gi], ref_norms[t], rtol=1e-6, atol=0)
    assert all(n[3].item() == 0.0 for n in all_norms)
    assert st.steps.tolist() == [5 if g != 3 else 0 for g in group_ids]


def reference_step_fp32(p, g, m, v, step, group, clip_coef=1.0):
    """One torch AdamW step on float32 copies; returns the float32 param and moments."""
    ref = p.float().clone().requires_grad_()
    opt = torch.optim.AdamW([ref], **torch_kwargs(group))
    opt.state[ref] = {
        "step": torch.tensor(float(step)),
        "exp_avg": m.float().clone(),
        "exp_avg_sq": v.float().clone(),
    }
    ref.grad = g.float() * torch.tensor(clip_coef, dtype=torch.float32)
    opt.step()
    return ref.detach(), opt.state[ref]["exp_avg"], opt.state[ref]["exp_avg_sq"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("moments_f32", [False, True])
def test_reduced_precision_params_match_fp32_math_then_cast(dtype, moments_f32):
    gen = torch.Generator().manual_seed(5)
    shapes = [(1,), (4097,), (), (31, 3)]
    group = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.05)
    p0 = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    st = MintState(p0, [0] * len(shapes), hp_rows(group), moment_dtype=torch.float32 if moments_f32 else None)
    mdt = torch.float32 if moments_f32 else dtype
    ref_p = [p.clone() for p in p0]
    ref_m = [torch.zeros(s, dtype=mdt) for s in shapes]
    ref_v = [torch.zeros(s, dtype=mdt) for s in shapes]
    for t in range(1, 5):
        grads = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
        st.step(grads)
        # each step is compared with a reference started from mint's own previous state
        refs = [
            reference_step_fp32(ref_p[i], grads[i], ref_m[i], ref_v[i], t - 1, group)
            for i in range(len(shapes))
        ]
        m_scale = max(r[1].abs().max().item() for r in refs if r[1].numel())  # of the whole list: a 0-dim
        v_scale = max(r[2].abs().max().item() for r in refs if r[2].numel())  # moment may cancel to ~0
        for i, (p32, m32, v32) in enumerate(refs):
            torch.testing.assert_close(st.params[i], p32.to(dtype), **TOL_REDUCED[dtype])
            for got, want, scale in ((st.exp_avgs[i], m32, m_scale), (st.exp_avg_sqs[i], v32, v_scale)):
                if moments_f32:
                    assert_close_scaled(got, want, scale=scale)
                else:
                    torch.testing.assert_close(got, want.to(dtype), **TOL_REDUCED[dtype])
            ref_p[i], ref_m[i], ref_v[i] = (
                st.params[i].clone(), st.exp_avgs[i].clone(), st.exp_avg_sqs[i].clone())
        assert st.params[0].dtype == dtype and st.exp_avgs[0].dtype == mdt


def test_reduced_precision_clipping_uses_fp32_grads():
    gen = torch.Generator().manual_seed(6)
    group = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, max_grad_norm=0.1)
    p0 = torch.randn(1000, generator=gen).to(torch.bfloat16)
    g = torch.randn(1000, generator=gen).to(torch.bfloat16)
    st = MintState([p0], [0], hp_rows(group), moment_dtype=torch.float32)
    norms = st.step([g])
    norm = torch.linalg.vector_norm(g.double())
    torch.testing.assert_close(norms[0].double(), norm, rtol=1e-6, atol=0)
    coef = (0.1 / (norm + 1e-6)).item()
    p32, m32, v32 = reference_step_fp32(p0, g, torch.zeros(1000), torch.zeros(1000), 0, group, coef)
    torch.testing.assert_close(st.params[0], p32.to(torch.bfloat16), **TOL_REDUCED[torch.bfloat16])
    torch.testing.assert_close(st.exp_avgs[0], m32, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(st.exp_avg_sqs[0], v32, rtol=1e-6, atol=1e-12)


def make_valid(n=3):
    params = [torch.randn(4, 5), torch.randn(7), torch.randn(())][:n]
    return dict(
        params=params,
        grads=[torch.randn_like(p) for p in params],
        exp_avgs=[torch.zeros_like(p) for p in params],
        exp_avg_sqs=[torch.zeros_like(p) for p in params],
        steps=torch.zeros(len(params), dtype=torch.int64),
        group_ids=torch.tensor([0, 1, 0][:n], dtype=torch.int64),
        hyperparams=hp_rows(GROUP_A, GROUP_B),
    )


def _set(key, index, value):
    def edit(a):
        if index is None:
            a[key] = value(a[key]) if callable(value) else value
        else:
            a[key][index] = value(a[key][index]) if callable(value) else value
    return edit


def _alias(key, index, src_key, src_index, view):
    def edit(a):
        a[key][index] = view(a[src_key][src_index])
    return edit


def _hp(row, col, value):
    def edit(a):
        a["hyperparams"][row, col] = value
    return edit


BAD_INPUTS = [
    ("params[0] must be contiguous", _set("params", 0, lambda p: p.t().contiguous().t())),
    ("params[1] must be contiguous", _set("params", 1, lambda p: torch.randn(14)[::2])),
    ("params[0] must be float32, bfloat16 or float16", _set("params", 0, lambda p: p.double())),
    ("grads has 2 entries", _set("grads", None, lambda g: g[:2])),
    ("exp_avgs has 2 entries", _set("exp_avgs", None, lambda g: g[:2])),
    ("exp_avg_sqs has 4 entries", _set("exp_avg_sqs", None, lambda g: g + [torch.zeros(1)])),
    ("grads[1] must have the shape", _set("grads", 1, torch.randn(8))),
    ("grads[0] must have the dtype", _set("grads", 0, lambda g: g.half())),
    ("exp_avgs[2] must have the shape", _set("exp_avgs", 2, torch.zeros(1))),
    ("exp_avgs[1] must be float32 or the dtype", _set("exp_avgs", 1, lambda m: m.double())),
    ("exp_avg_sqs[0] must be contiguous", _set("exp_avg_sqs", 0, lambda m: torch.zeros(5, 4).t())),
    ("steps must be", _set("steps", None, lambda s: s.int())),
    ("steps must be", _set("steps", None, lambda s: s[:2])),
    ("steps[1] must be >= 0", _set("steps", 1, -1)),
    ("group_ids[1] = 2 is out of range", _set("group_ids", 1, 2)),
    ("group_ids[0] = -1 is out of range", _set("group_ids", 0, -1)),
    ("group_ids must be", _set("group_ids", None, lambda g: g.int())),
    ("hyperparams must be", _set("hyperparams", None, lambda h: h.float())),
    ("hyperparams must be", _set("hyperparams", None, lambda h: h[:, :5])),
    ("hyperparams[1] beta1 must be in [0, 1)", _hp(1, 1, 1.0)),
    ("hyperparams[0] beta2 must be in [0, 1)", _hp(0, 2, -0.1)),
    ("hyperparams[1] eps must be > 0", _hp(1, 3, 0.0)),
    ("hyperparams[0] lr must be >= 0", _hp(0, 0, -1e-3)),
    ("hyperparams[0] weight_decay must be >= 0", _hp(0, 4, -1.0)),
    ("hyperparams[1] must be finite", _hp(1, 5, float("nan"))),
    ("params[0] and params[2] share memory", _alias("params", 2, "params", 0, lambda t: t[1, 2])),
    ("exp_avgs[1] and exp_avg_sqs[1] share memory", _alias("exp_avg_sqs", 1, "exp_avgs", 1, lambda t: t)),
]


@pytest.mark.parametrize("message,edit", BAD_INPUTS, ids=[m for m, _ in BAD_INPUTS])
def test_bad_inputs_raise_naming_the_argument_and_change_nothing(message, edit):
    args = make_valid()
    edit(args)
    before = copy.deepcopy(args)
    with pytest.raises(RuntimeError, match=re.escape(message)):
        fused_adamw(**args)
    for key in ("params", "exp_avgs", "exp_avg_sqs"):
        assert all(torch.equal(a, b) for a, b in zip(args[key], before[key]))
    assert torch.equal(args["steps"], before["steps"])


def test_overlap_check_after_a_passing_call_with_other_tensors():
    """The overlap check remembers the last passing tensor list: the same list again passes, and a list that
    differs only by an aliased moment is still refused (with nothing changed)."""
    args = make_valid()
    fused_adamw(**args)
    fused_adamw(**args)  # identical list: accepted from the remembered spans
    _alias("exp_avg_sqs", 1, "exp_avgs", 1, lambda t: t)(args)
    before = copy.deepcopy(args)
    with pytest.raises(RuntimeError, match=re.escape("exp_avgs[1] and exp_avg_sqs[1] share memory")):
        fused_adamw(**args)
    assert all(torch.equal(a, b) for a, b in zip(args["params"], before["params"]))


def _big_call_inputs(seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(1 << 17) + 3, 5, 1, 70001, 0] + [97] * 200 + [(1 << 18) + 1]
    params = [torch.randn(s, generator=gen) for s in shapes]
    group_ids = [i % 3 for i in range(len(shapes))]
    groups = [dict(GROUP_A, max_grad_norm=1.0), GROUP_B, dict(GROUP_C, max_grad_norm=2.0)]
    st = MintState(params, group_ids, hp_rows(*groups))
    grads = [torch.randn(s, generator=gen) for s in shapes]
    return st, grads


def test_deterministic_and_independent_of_thread_count():
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (threads, threads, 1, 3, 8):
            torch.set_num_threads(n)
            st, grads = _big_call_inputs(7)
            norms = [st.step(grads) for _ in range(2)]
            results.append((st, norms))
    finally:
        torch.set_num_threads(threads)
    first, first_norms = results[0]
    for st, norms in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(norms, first_norms))
        for key in ("params", "exp_avgs", "exp_avg_sqs"):
            assert all(torch.equal(a, b) for a, b in zip(getattr(st, key), getattr(first, key)))


def test_opcheck():
    gen = torch.Generator().manual_seed(8)
    params = [
        torch.randn(33, generator=gen),
        torch.randn(4, 4, generator=gen).bfloat16(),
        torch.randn((), generator=gen),
        torch.randn(9, generator=gen),
    ]
    grads = [torch.randn(33, generator=gen), torch.randn(4, 4, generator=gen).bfloat16(), None,
             torch.randn(9, generator=gen)]
    args = (
        params,
        grads,
        [torch.zeros(33), torch.zeros(4, 4), torch.zeros(()), torch.zeros(9)],  # fp32 moment, bf16 param
        [torch.zeros_like(p) for p in params],
        torch.tensor([0, 3, 1, 2], dtype=torch.int64),
        torch.tensor([0, 1, 1, 0], dtype=torch.int64),
        hp_rows(dict(GROUP_A, max_grad_norm=0.5), GROUP_B),
    )
    torch.library.opcheck(torch.ops.mint.adamw_.default, args)


def _model_params(seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(8, 16), (16,), (4, 8), (), (33,)]
    return [torch.randn(s, generator=gen).to(dtype) for s in shapes]


def _set_grads(params, seed, skip=()):
    gen = torch.Generator().manual_seed(seed)
    for i, p in enumerate(params):
        g = torch.randn(p.shape, generator=gen).to(p.dtype)
        p.grad = None if i in skip else g


def _groups(params, cls):
    extra = {} if cls is torch.optim.AdamW else {"max_grad_norm": 0.0}
    return [
        {"params": params[:2], "lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, **extra},
        {"params": params[2:], "lr": 3e-3, "betas": (0.8, 0.95), "eps": 1e-12, "weight_decay": 0.1, **extra},
    ]


def test_fused_adamw_optimizer_matches_torch_and_round_trips_state_dict():
    mine = [p.requires_grad_() for p in _model_params(9)]
    ref = [p.detach().clone().requires_grad_() for p in mine]
    opt = FusedAdamW(_groups(mine, FusedAdamW))
    ref_opt = torch.optim.AdamW(_groups(ref, torch.optim.AdamW), foreach=False)
    for t in range(3):
        skip = (3,) if t == 1 else ()
        _set_grads(mine, t, skip)
        _set_grads(ref, t, skip)
        opt.step()
        ref_opt.step()
    for p, r in zip(mine, ref):
        torch.testing.assert_close(p.detach(), r.detach(), **F32_P)
        assert_close_scaled(opt.state[p]["exp_avg"], ref_opt.state[r]["exp_avg"])
        assert_close_scaled(opt.state[p]["exp_avg_sq"], ref_opt.state[r]["exp_avg_sq"])
        assert opt.state[p]["step"].item() == ref_opt.state[r]["step"].item()
    assert opt.state[mine[3]]["step"].item() == 2.0
    assert opt.last_grad_norms.shape == (2,)

    # save, restore into a fresh optimizer over copies, continue: identical to never having stopped
    saved = copy.deepcopy(opt.state_dict())
    resumed = [p.detach().clone().requires_grad_() for p in mine]
    opt2 = FusedAdamW(_groups(resumed, FusedAdamW))
    opt2.load_state_dict(copy.deepcopy(saved))  # load_state_dict keeps (does not copy) the tensors
    # torch AdamW resumed from FusedAdamW's state dict continues to match as well
    ref2 = [p.detach().clone().requires_grad_() for p in mine]
    ref_opt2 = torch.optim.AdamW(_groups(ref2, torch.optim.AdamW), foreach=False)
    ref_opt2.load_state_dict({"state": saved["state"], "param_groups": [
        {k: v for k, v in g.items() if k not in ("max_grad_norm", "moment_dtype")} | {"foreach": False}
        for g in saved["param_groups"]]})
    for t in range(3, 5):
        for ps in (mine, resumed, ref2):
            _set_grads(ps, t)
        opt.step()
        opt2.step()
        ref_opt2.step()
    for p, q, r in zip(mine, resumed, ref2):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["exp_avg_sq"], opt2.state[q]["exp_avg_sq"])
        torch.testing.assert_close(p.detach(), r.detach(), **F32_P)
        assert opt2.state[q]["step"].item() == ref_opt2.state[r]["step"].item() == opt.state[p]["step"].item()
    assert [opt.state[p]["step"].item() for p in mine] == [5.0, 5.0, 5.0, 4.0, 5.0]


def test_fused_adamw_resumes_from_a_torch_adamw_state_dict():
    ref = [p.requires_grad_() for p in _model_params(13)]
    ref_opt = torch.optim.AdamW(_groups(ref, torch.optim.AdamW), foreach=False)
    _set_grads(ref, 0)
    ref_opt.step()
    mine = [p.detach().clone().requires_grad_() for p in ref]
    opt = FusedAdamW(_groups(mine, FusedAdamW))
    opt.load_state_dict(copy.deepcopy(ref_opt.state_dict()))
    for t in (1, 2):
        _set_grads(ref, t)
        _set_grads(mine, t)
        ref_opt.step()
        opt.step()
    for p, r in zip(mine, ref):
        torch.testing.assert_close(p.detach(), r.detach(), **F32_P)
        assert opt.state[p]["step"].item() == ref_opt.state[r]["step"].item() == 3.0


def test_fused_adamw_fp32_moments_for_bf16_params_survive_state_dict():
    params = [p.requires_grad_() for p in _model_params(10, torch.bfloat16)]
    opt = FusedAdamW(params, lr=1e-2, moment_dtype=torch.float32, max_grad_norm=1.0)
    _set_grads(params, 0)
    opt.step()
    assert all(opt.state[p]["exp_avg"].dtype == torch.float32 for p in params)
    assert opt.last_grad_norms.shape == (1,) and opt.last_grad_norms[0] > 0
    saved = copy.deepcopy(opt.state_dict())
    copies = [p.detach().clone().requires_grad_() for p in params]
    opt2 = FusedAdamW(copies, lr=1e-2, moment_dtype=torch.float32, max_grad_norm=1.0)
    opt2.load_state_dict(saved)
    for p, q in zip(params, copies):
        assert opt2.state[q]["exp_avg"].dtype == torch.float32
        assert torch.equal(opt2.state[q]["exp_avg_sq"], opt.state[p]["exp_avg_sq"])
    for ps, o in ((params, opt), (copies, opt2)):
        _set_grads(ps, 1)
        o.step()
    assert all(torch.equal(p, q) for p, q in zip(params, copies))


def test_fake_kernel_shape():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        args = make_valid()
        out = torch.ops.mint.adamw_(*args.values())
    assert out.shape == (2,) and out.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_adamw_master_weights_match_fp32_training(dtype):
    """With master_weights, bf16/fp16 params follow an fp32 AdamW run on fp32 copies (rounded once per step)."""
    from mint.ops.adam import FusedAdamW

    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(37, 11, generator=gen), torch.randn(5, generator=gen) + 1.0]
    low = [torch.nn.Parameter(t.to(dtype)) for t in init]
    ref = [torch.nn.Parameter(t.to(dtype).float()) for t in init]
    opt = FusedAdamW(low, lr=1e-5, weight_decay=0.1, master_weights=True)
    ref_opt = torch.optim.AdamW(ref, lr=1e-5, betas=(0.9, 0.95), eps=1e-12, weight_decay=0.1, foreach=False)
    for _ in range(7):
        grads = [torch.randn(t.shape, generator=gen).to(dtype) for t in init]
        for p, r, g in zip(low, ref, grads):
            p.grad = g
            r.grad = g.float()
        opt.step()
        ref_opt.step()
    for p, r in zip(low, ref):
        master = opt.state[p]["master"]
        assert master.dtype == torch.float32 and opt.state[p]["exp_avg"].dtype == torch.float32
        torch.testing.assert_close(master, r.detach(), rtol=1e-6, atol=1e-7)
        assert torch.equal(p.detach(), r.detach().to(dtype))


def test_fused_adamw_master_weights_keep_updates_below_bf16_resolution():
    """lr 1e-5 steps on weights of 1.0 are below bf16's resolution: lost without a master copy, kept with it."""
    from mint.ops.adam import FusedAdamW

    plain = torch.nn.Parameter(torch.ones(64, dtype=torch.bfloat16))
    mastered = torch.nn.Parameter(torch.ones(64, dtype=torch.bfloat16))
    opts = [FusedAdamW([plain], lr=1e-5), FusedAdamW([mastered], lr=1e-5, master_weights=True)]
    for _ in range(300):
        for p, opt in zip((plain, mastered), opts):
            p.grad = torch.ones(64, dtype=torch.bfloat16)
            opt.step()
    assert torch.equal(plain.detach(), torch.ones(64, dtype=torch.bfloat16))
    master = opts[1].state[mastered]["master"]
    torch.testing.assert_close(master, torch.full((64,), 1.0 - 300 * 1e-5), rtol=0, atol=1e-5)
    assert (mastered.detach() < 1.0).all()  # 0.997 rounds to bf16's 0.99609375


def test_fused_adamw_master_state_dict_round_trip():
    from mint.ops.adam import FusedAdamW

    p = torch.nn.Parameter(torch.randn(8, dtype=torch.bfloat16))
    opt = FusedAdamW([p], lr=1e-3, master_weights=True)
    p.grad = torch.randn(8, dtype=torch.bfloat16)
    opt.step()
    state = opt.state_dict()
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = FusedAdamW([q], lr=1e-3, master_weights=True)
    opt2.load_state_dict(state)
    assert opt2.state[q]["master"].dtype == torch.float32
    assert torch.equal(opt2.state[q]["master"], opt.state[p]["master"])


@pytest.mark.parametrize("clip", [0.0, 1.0], ids=["norm_in_update_pass", "norm_in_clip_pass"])
def test_gradient_norms_of_long_tensors_match_float64(clip):
    """Norms over tensors spanning many fp32 accumulation blocks and chunks (with tails), values over six
    orders of magnitude, equal the float64 norm to float32 rounding, with or without clipping."""
    gen = torch.Generator().manual_seed(12)
    shapes = [(3 * 2**16 + 77,), (1000, 33), (5,)]
    grads = [torch.randn(s, generator=gen) * torch.logspace(-3, 3, s[-1]) for s in shapes]
    st = MintState([torch.zeros(s) for s in shapes], [0, 0, 0], hp_rows(dict(GROUP_A, max_grad_norm=clip)))
    norms = st.step(grads)
    want = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]).double())
    torch.testing.assert_close(norms, want.float().reshape(1), rtol=2e-7, atol=0)
