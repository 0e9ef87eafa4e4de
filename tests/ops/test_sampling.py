"""mint.ops.sample / torch.ops.mint.sample against a plain-PyTorch reference of the kept set."""

from __future__ import annotations

import math

import pytest
import torch

import mint.ops
from mint.ops import sample

LOGPROB_TOL = 1e-5  # the documented log-prob, computed in float64 by the reference


# ---------------------------------------------------------------- reference (plain PyTorch)


def ref_kept(row: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Bool [V]: the tokens a T > 0 draw may return (before dropping zero-probability ones).

    Ranking: higher logit first, lower index on ties. Top-k keeps the first k; top-p the smallest
    prefix (of the top-k set) whose renormalised mass reaches p.
    """
    row = row.double()
    vocab = row.numel()
    order = torch.sort(row, descending=True, stable=True).indices
    rank = torch.empty(vocab, dtype=torch.long)
    rank[order] = torch.arange(vocab)
    keep = torch.ones(vocab, dtype=torch.bool)
    if 0 < top_k < vocab:
        keep &= rank < top_k
    if top_p < 1.0:
        probs = torch.softmax((row / temperature).masked_fill(~keep, -math.inf), dim=0)
        sorted_probs = probs[order]
        mass_before = torch.cumsum(sorted_probs, 0) - sorted_probs
        nucleus = torch.empty(vocab, dtype=torch.bool)
        nucleus[order] = mass_before < top_p
        keep &= nucleus
    return keep


def ref_logprob(row: torch.Tensor, temperature: float, top_k: int, top_p: float, token: int) -> float:
    """The documented log-prob: greedy -> log_softmax(logits); else log-softmax of logits/T over the kept set."""
    row = row.double()
    if temperature == 0:
        return torch.log_softmax(row, 0)[token].item()
    z = row / temperature
    keep = ref_kept(row, temperature, top_k, top_p)
    return (z[token] - torch.logsumexp(z[keep], 0)).item()


def ref_probs(row: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Float64 [V]: softmax(logits / T) restricted to the kept set and renormalised."""
    z = row.double() / temperature
    keep = ref_kept(row, temperature, top_k, top_p)
    return torch.softmax(z.masked_fill(~keep, -math.inf), 0)


def raw_args(logits, temperature=1.0, top_k=-1, top_p=1.0, seed=0, subsequence=0, offset=0):
    """Arguments for torch.ops.mint.sample with every per-row value broadcast to [B]."""
    b = logits.shape[0]

    def full(v, dtype):
        return v if isinstance(v, torch.Tensor) else torch.full((b,), v, dtype=dtype)

    return (
        logits,
        full(temperature, torch.float32),
        full(top_k, torch.int64),
        full(top_p, torch.float32),
        full(seed, torch.int64),
        full(subsequence, torch.int64),
        full(offset, torch.int64),
    )


def check_rows(logits, temperature, top_k, top_p, tokens, logprobs):
    """Every row: token inside the reference kept set with nonzero probability, log-prob to 1e-5."""
    for b in range(logits.shape[0]):
        row = logits[b].float()
        t, k, p = float(temperature[b]), int(top_k[b]), float(top_p[b])
        tok = int(tokens[b])
        assert 0 <= tok < row.numel()
        if t == 0:
            assert tok == int(torch.argmax(row))
        else:
            assert bool(ref_kept(row, t, k, p)[tok]), (b, tok)
            assert row[tok] > -math.inf
        want = ref_logprob(row, t, k, p, tok)
        assert abs(float(logprobs[b]) - want) <= LOGPROB_TOL, (b, float(logprobs[b]), want)


def frequencies(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=vocab).double() / tokens.numel()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0).item()


# ---------------------------------------------------------------- randomness


def test_philox_known_answers_through_the_op():
    # Flat logits over 2**16 tokens give token = floor(u * 2**16) = the top 16 bits of Philox word 0,
    # so the op's key/counter layout is checked against the Random123 kat_vectors for philox4x32_10:
    #   ctr 0 0 0 0, key 0 0                     -> 6627e8d5 ...
    #   ctr ffffffff x4, key ffffffff x2         -> 408f276d ...
    #   ctr 243f6a88 85a308d3 13198a2e 03707344, key a4093822 299f31d0 -> d16cfe09 ...
    # with key = seed and counter = (offset lo, offset hi, subsequence lo, subsequence hi).
    ones = 2**64 - 1
    seeds = [0, ones, 0x299F31D0A4093822]
    subsequences = [0, ones, 0x0370734413198A2E]
    offsets = [0, ones, 0x85A308D3243F6A88]
    logits = torch.zeros(3, 2**16)
    tokens, logprobs = sample(logits, 1.0, seed=seeds, subsequence=subsequences, offset=offsets)
    assert tokens.tolist() == [0x6627, 0x408F, 0xD16C]
    torch.testing.assert_close(logprobs, torch.full((3,), -16 * math.log(2)), rtol=0, atol=1e-6)


def test_reproducible_and_keyed_by_offset():
    torch.manual_seed(0)
    logits = torch.randn(64, 301)
    a = sample(logits, 0.9, 40, 0.95, seed=7, offset=torch.arange(64))
    b = sample(logits.clone(), 0.9, 40, 0.95, seed=7, offset=torch.arange(64))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = sample(logits, 0.9, 40, 0.95, seed=7, offset=torch.arange(64) + 1000)
    assert not torch.equal(a[0], c[0])


def test_same_seed_same_token_when_other_rows_change():
    torch.manual_seed(1)
    vocab = 1000
    target = torch.randn(vocab)
    batch1 = torch.stack([torch.randn(vocab), target, torch.randn(vocab)])
    others = torch.randn(37, vocab)
    batch2 = torch.cat([others[:20], target[None], others[20:]])
    for t, k, p in [(1.0, -1, 1.0), (0.7, 50, 1.0), (1.3, -1, 0.8), (0.5, 20, 0.9), (0.0, -1, 1.0)]:
        t1, l1 = sample(batch1, t, k, p, seed=[1, 42, 3], subsequence=[0, 5, 0], offset=[0, 9, 0])
        seeds2 = torch.randint(0, 100, (38,))
        seeds2[20] = 42
        subs2 = torch.zeros(38, dtype=torch.long)
        subs2[20] = 5
        offs2 = torch.randint(0, 100, (38,))
        offs2[20] = 9
        t2, l2 = sample(batch2, t, k, p, seed=seeds2, subsequence=subs2, offset=offs2)
        assert t1[1] == t2[20]
        assert torch.equal(l1[1], l2[20])


def test_num_samples_one_seed_flat_distribution_differ():
    logits = torch.zeros(4, 1000)
    for seed in range(20):
        tokens, _ = sample(logits, 1.0, seed=seed, subsequence=torch.arange(4), offset=3)
        assert len(set(tokens.tolist())) > 1, seed


def test_subsequences_are_independent():
    # Two subsequences of one seed on a fair coin: they agree about half the time.
    n = 4000
    logits = torch.zeros(2 * n, 2)
    sub = torch.arange(2).repeat(n)
    off = torch.arange(n).repeat_interleave(2)
    tokens, _ = sample(logits, 1.0, seed=11, subsequence=sub, offset=off)
    pairs = tokens.view(n, 2)
    agree = (pairs[:, 0] == pairs[:, 1]).double().mean().item()
    assert abs(agree - 0.5) < 0.04
    assert abs(tokens.double().mean().item() - 0.5) < 0.03


# ---------------------------------------------------------------- distributions


def test_unfiltered_frequencies_match_softmax():
    torch.manual_seed(2)
    vocab, draws = 50, 20000
    row = torch.randn(vocab) * 1.5
    for t in (1.0, 0.6, 2.0):
        logits = row.expand(draws, vocab)  # stride-0 rows
        tokens, logprobs = sample(logits, t, -1, 1.0, seed=5, offset=torch.arange(draws))
        want = torch.softmax(row.double() / t, 0)
        assert cosine(frequencies(tokens, vocab), want) > 0.99
        assert (frequencies(tokens, vocab) - want).abs().max() < 0.02
        torch.testing.assert_close(logprobs.double(), torch.log(want)[tokens], rtol=0, atol=LOGPROB_TOL)


@pytest.mark.parametrize("top_k,top_p", [(5, 1.0), (-1, 0.7), (8, 0.6)])
def test_filtered_frequencies_match_renormalised(top_k, top_p):
    torch.manual_seed(3)
    vocab, draws = 40, 20000
    row = torch.randn(vocab)
    tokens, logprobs = sample(row.expand(draws, vocab), 0.8, top_k, top_p, seed=6, offset=torch.arange(draws))
    want = ref_probs(row, 0.8, top_k, top_p)
    assert torch.all(want[tokens] > 0)
    assert cosine(frequencies(tokens, vocab), want) > 0.99
    torch.testing.assert_close(logprobs.double(), torch.log(want)[tokens], rtol=0, atol=LOGPROB_TOL)


def test_top_k_far_larger_than_vocab_is_no_filter():
    torch.manual_seed(4)
    for vocab in (1, 7, 300):
        logits = torch.randn(200, vocab)
        big, big_lp = sample(logits, 1.0, 2**30, 1.0, seed=3, offset=torch.arange(200))
        none, none_lp = sample(logits, 1.0, -1, 1.0, seed=3, offset=torch.arange(200))
        huge, _ = sample(logits, 1.0, 2**62, 1.5, seed=3, offset=torch.arange(200))
        assert int(big.max()) < vocab and int(big.min()) >= 0
        assert torch.equal(big, none) and torch.equal(big_lp, none_lp) and torch.equal(huge, none)
        exact_v, _ = sample(logits, 1.0, vocab, 1.0, seed=3, offset=torch.arange(200))
        assert torch.equal(exact_v, none)


def test_top_p_tokens_lie_in_smallest_set_reaching_p():
    torch.manual_seed(5)
    batch, vocab = 400, 97
    logits = torch.randn(batch, vocab) * torch.rand(batch, 1) * 4
    temperature = torch.rand(batch) * 1.5 + 0.1
    top_p = torch.rand(batch) * 0.98 + 0.01
    top_k = torch.where(torch.rand(batch) < 0.5, torch.randint(1, 60, (batch,)), torch.full((batch,), -1))
    tokens, logprobs = sample(logits, temperature, top_k, top_p, seed=9, subsequence=torch.arange(batch))
    check_rows(logits, temperature, top_k, top_p, tokens, logprobs)


def test_top_k_ties_at_boundary_keep_lower_index():
    logits = torch.tensor([1.0, 2.0, 2.0, 2.0, 0.0]).expand(3000, 5)
    tokens, logprobs = sample(logits, 1.0, 2, 1.0, seed=1, offset=torch.arange(3000))
    assert set(tokens.tolist()) == {1, 2}
    torch.testing.assert_close(logprobs, torch.full((3000,), -math.log(2)))


def test_greedy_rows_mixed_with_random_rows():
    torch.manual_seed(6)
    batch, vocab = 64, 513
    logits = torch.randn(batch, vocab)
    logits[0, 10] = logits[0, 20] = logits[0].max() + 1  # tie: lowest index wins
    temperature = torch.where(torch.arange(batch) % 3 == 0, 0.0, 1.0)
    top_k = torch.where(torch.arange(batch) % 2 == 0, 10, -1)
    top_p = torch.full((batch,), 0.9)
    tokens, logprobs = sample(logits, temperature, top_k, top_p, seed=torch.arange(batch))
    greedy = temperature == 0
    assert torch.equal(tokens[greedy], logits[greedy].argmax(1))
    assert tokens[0] == 10
    check_rows(logits, temperature, top_k, top_p, tokens, logprobs)


def test_top_k_one_equals_greedy():
    torch.manual_seed(7)
    logits = torch.randn(32, 211)
    tokens, logprobs = sample(logits, 1.7, 1, 1.0, seed=torch.arange(32))
    assert torch.equal(tokens, logits.argmax(1))
    assert torch.equal(logprobs, torch.zeros(32))


def test_tiny_temperature_and_extreme_logits():
    logits = torch.tensor([[3e38, -3e38, 0.0, 1.0], [0.0, 1.0, -1e30, 1.0 - 1e-7]])
    tokens, logprobs = sample(logits, 1e-30, seed=[1, 2])
    assert tokens.tolist() == [0, 1]
    assert torch.equal(logprobs, torch.zeros(2))
    tokens, logprobs = sample(logits, [1.0, 0.0])
    assert tokens.tolist() == [0, 1] and torch.isfinite(logprobs).all()


# ---------------------------------------------------------------- -inf, NaN and invalid rows


def test_neg_inf_token_never_sampled():
    torch.manual_seed(8)
    vocab, draws = 20, 5000
    row = torch.randn(vocab) * 0.1
    banned = [0, 3, 4, 19]
    row[banned] = -math.inf
    logits = row.expand(draws, vocab)
    for k, p in [(-1, 1.0), (18, 1.0), (vocab, 0.999), (5, 0.99), (-1, 0.5)]:
        tokens, logprobs = sample(logits, 5.0, k, p, seed=2, offset=torch.arange(draws))
        assert not set(tokens.tolist()) & set(banned)
        assert torch.isfinite(logprobs).all()
    # only one finite token: always chosen, with probability 1
    one = torch.full((4, 6), -math.inf)
    one[:, 4] = 3.0
    tokens, logprobs = sample(one, [0.0, 1.0, 1.0, 1.0], [-1, -1, 3, 6], [1.0, 1.0, 1.0, 0.5], seed=[1, 2, 3, 4])
    assert tokens.tolist() == [4, 4, 4, 4]
    assert torch.equal(logprobs, torch.zeros(4))


def test_invalid_rows_are_reported_and_isolated():
    torch.manual_seed(9)
    vocab = 33
    logits = torch.randn(6, vocab)
    logits[1, 5] = math.nan
    logits[3] = -math.inf
    logits[4, 7] = math.inf
    temperature = [1.0, 1.0, 0.0, 0.0, 1.0, 0.8]
    for k, p in [(-1, 1.0), (4, 0.9)]:
        tokens, logprobs = sample(logits, temperature, k, p, seed=[5, 6, 7, 8, 9, 10])
        for b in (1, 3, 4):
            assert tokens[b] == -1 and math.isnan(logprobs[b])
        # the valid rows equal the same rows sampled alone
        valid = [0, 2, 5]
        alone = sample(logits[valid], [temperature[b] for b in valid], k, p, seed=[5, 7, 10])
        assert torch.equal(tokens[valid], alone[0]) and torch.equal(logprobs[valid], alone[1])
    # greedy on an all -inf / NaN row as well
    tokens, logprobs = sample(logits, 0.0)
    assert tokens[[1, 3, 4]].tolist() == [-1, -1, -1] and torch.isnan(logprobs[[1, 3, 4]]).all()


# ---------------------------------------------------------------- dtypes, shapes, strides


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("vocab", [1, 7, 49153])
def test_dtypes_and_odd_vocab(dtype, vocab):
    torch.manual_seed(vocab)
    batch = 6
    logits = (torch.randn(batch, vocab) * 3).to(dtype)
    temperature = torch.tensor([0.0, 1.0, 0.7, 1.2, 0.5, 1.0])
    top_k = torch.tensor([-1, -1, 5, -1, 100, 2**30])
    top_p = torch.tensor([1.0, 1.0, 1.0, 0.9, 0.5, 0.3])
    tokens, logprobs = sample(logits, temperature, top_k, top_p, seed=torch.arange(batch) + 100)
    assert tokens.dtype == torch.int64 and logprobs.dtype == torch.float32
    check_rows(logits, temperature, top_k, top_p, tokens, logprobs)
    if vocab == 1:
        assert torch.equal(tokens, torch.zeros(batch, dtype=torch.long))
        assert torch.equal(logprobs, torch.zeros(batch))


def test_non_contiguous_logits_match_contiguous():
    torch.manual_seed(10)
    wide = torch.randn(300, 24)
    logits = wide.t()[:, ::2]  # [24, 150], strides (1, 48)
    assert not logits.is_contiguous()
    for dtype in (torch.float32, torch.bfloat16):
        x = logits.to(dtype)
        args = dict(temperature=0.9, top_k=30, top_p=0.9, seed=3, offset=torch.arange(24))
        a = sample(x, **args)
        b = sample(x.contiguous(), **args)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_empty_batch():
    tokens, logprobs = sample(torch.randn(0, 5))
    assert tokens.shape == (0,) and logprobs.shape == (0,)


def test_wrapper_broadcasts_and_converts():
    torch.manual_seed(11)
    logits = torch.randn(3, 17)
    a = sample(logits, torch.tensor(0.5, dtype=torch.float64), [3, 4, 5], 0.9, torch.tensor([1, 2, 3], dtype=torch.int32))
    b = torch.ops.mint.sample(
        *raw_args(logits, 0.5, torch.tensor([3, 4, 5]), 0.9, torch.tensor([1, 2, 3]))
    )
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert mint.ops.sample is sample


# ---------------------------------------------------------------- errors and opcheck


def _bad(name, **overrides):
    logits = overrides.pop("logits", torch.randn(3, 10))
    args = list(raw_args(logits))
    fields = ["logits", "temperature", "top_k", "top_p", "seed", "subsequence", "offset"]
    for key, value in overrides.items():
        args[fields.index(key)] = value
    with pytest.raises(RuntimeError, match=name):
        torch.ops.mint.sample(*args)


def test_bad_inputs_name_the_argument():
    _bad("logits", logits=torch.randn(10))
    _bad("logits", logits=torch.randn(2, 3, 4))
    _bad("logits", logits=torch.randn(3, 0))
    _bad("logits", logits=torch.randint(0, 5, (3, 10)))
    _bad("logits", logits=torch.randn(3, 10, dtype=torch.float64))
    _bad("temperature", temperature=torch.ones(2))
    _bad("temperature", temperature=torch.ones(3, dtype=torch.float64))
    _bad("temperature", temperature=torch.tensor([1.0, -0.5, 1.0]))
    _bad("temperature", temperature=torch.tensor([1.0, math.inf, 1.0]))
    _bad("temperature", temperature=torch.tensor([1.0, math.nan, 1.0]))
    _bad("top_k", top_k=torch.ones(3, dtype=torch.int32))
    _bad("top_k", top_k=torch.ones(4, dtype=torch.int64))
    _bad("top_p", top_p=torch.tensor([0.5, 0.0, 1.0]))
    _bad("top_p", top_p=torch.tensor([0.5, -1.0, 1.0]))
    _bad("top_p", top_p=torch.tensor([0.5, math.nan, 1.0]))
    _bad("top_p", top_p=torch.ones(1))
    _bad("seed", seed=torch.zeros(3, 1, dtype=torch.int64))
    _bad("subsequence", subsequence=torch.zeros(3))
    _bad("offset", offset=torch.zeros(2, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="top_p"):
        sample(torch.randn(2, 5), top_p=0.0)
    with pytest.raises(RuntimeError, match="temperature"):
        sample(torch.randn(2, 5), temperature=[1.0, 2.0, 3.0])


def test_opcheck():
    torch.manual_seed(12)
    logits = torch.randn(5, 37)
    cases = [
        raw_args(logits, 0.8, 5, 0.9, 1, 0, torch.arange(5)),
        raw_args(logits.to(torch.bfloat16), torch.tensor([0.0, 1, 1, 0.5, 2]), -1, 1.0, 3),
        raw_args(torch.randn(37, 5).t(), 1.0, torch.tensor([1, 0, 40, 3, -1]), 0.5, 2),
    ]
    for args in cases:
        torch.library.opcheck(torch.ops.mint.sample.default, args)
