"""The CPU sampler's fast paths (csrc/cpu/sampling.cpp, sampling_simd.h) against plain references.

Paths: the one-pass running top-k filter (k < V), the histogram top-p search (no top-k), the
unfiltered block walk and greedy rows; each at vocabulary sizes around the vector width (8) and the
walk's block (64), with adversarial orders for the top-k buffer, ties at every boundary, both thread
counts, and fp32 / bf16 / fp16 logits. The exact token is checked against an independent Python
Philox4x32-10 + inverse-CDF walk in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from mint.ops import sample
from tests.ops.test_sampling import check_rows, ref_kept

M32 = 0xFFFFFFFF


def philox_u53(seed: int, subsequence: int, offset: int) -> float:
    """Philox4x32-10 (Salmon et al.) keyed as documented, then the 53-bit uniform of words 0 and 1."""
    c = [offset & M32, (offset >> 32) & M32, subsequence & M32, (subsequence >> 32) & M32]
    k0, k1 = seed & M32, (seed >> 32) & M32
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ c[3] ^ k1) & M32, p0 & M32]
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    bits = ((c[0] >> 5) << 26) | (c[1] >> 6)
    return bits / 2.0**53


def ref_token(row: torch.Tensor, t: float, k: int, p: float, seed: int, sub: int = 0, off: int = 0) -> int:
    """The documented draw: weights float(exp(z)) of z = float((l - max) / T), kept set, walk in index order."""
    row = row.float()
    z = ((row.double() - row.max().double()) * (1.0 / t)).float()
    w = torch.exp(z.double()).float().double()
    w = torch.where(ref_kept(row, t, k, p), w, torch.zeros_like(w))
    target = philox_u53(seed, sub, off) * w.sum().item()
    cum = torch.cumsum(w, 0)
    hit = torch.nonzero((cum > target) & (w > 0))
    return int(hit[0]) if hit.numel() else int(torch.nonzero(w > 0)[-1])


def run_and_check(logits, t, k, p, seeds=None):
    b = logits.shape[0]
    seeds = torch.arange(b) * 7919 + 3 if seeds is None else seeds
    temperature, top_k, top_p = torch.full((b,), t), torch.full((b,), k), torch.full((b,), p)
    tokens, logprobs = sample(logits, temperature, top_k, top_p, seed=seeds)
    check_rows(logits, temperature, top_k, top_p, tokens, logprobs)
    return tokens, logprobs


SIZES = [1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129, 1000, 4097]
PATHS = [(1.0, -1, 1.0), (0.8, 3, 1.0), (0.9, 50, 0.8), (1.1, -1, 0.7), (0.0, -1, 1.0), (0.7, 2000, 1.0)]


@pytest.mark.parametrize("vocab", SIZES)
def test_vector_tails_every_path_exact_token(vocab):
    torch.manual_seed(vocab)
    logits = torch.randn(4, vocab) * 2
    for t, k, p in PATHS:
        tokens, _ = run_and_check(logits, t, k, p)
        if t > 0:
            for b in range(4):
                assert int(tokens[b]) == ref_token(logits[b], t, k, p, b * 7919 + 3), (vocab, t, k, p, b)


@pytest.mark.parametrize("order", ["ascending", "descending", "equal", "zigzag", "plateaus"])
@pytest.mark.parametrize("k", [1, 5, 255, 256, 257, 1500])
def test_top_k_filter_adversarial_orders(order, k):
    vocab = 6000
    base = torch.arange(vocab, dtype=torch.float32) / 100
    row = {
        "ascending": base,  # every token beats the bar: the buffer fills and shrinks again and again
        "descending": base.flip(0),
        "equal": torch.zeros(vocab),  # ties everywhere: the lowest k indices
        "zigzag": torch.where(torch.arange(vocab) % 2 == 0, base, -base),
        "plateaus": torch.div(base * 100, 700, rounding_mode="floor"),  # long runs of equal values
    }[order]
    logits = row.expand(3, vocab).contiguous()
    # a huge temperature makes the kept set near-uniform, so its log-prob pins its size
    tokens, logprobs = run_and_check(logits, 1e4, k, 1.0)
    keep = ref_kept(row, 1e4, k, 1.0)
    assert int(keep.sum()) == k
    assert all(bool(keep[int(t)]) for t in tokens)
    if order == "equal":
        assert int(tokens.max()) < k
        torch.testing.assert_close(logprobs, torch.full((3,), -math.log(k)))


def test_top_k_filter_many_draws_cover_exactly_the_top_k():
    torch.manual_seed(1)
    vocab, k, draws = 3000, 40, 20000
    row = torch.randn(vocab)
    row[torch.randperm(vocab)[:10]] = row.max()  # a tie group straddling the k-th place? make it the top
    tokens, _ = sample(row.expand(draws, vocab), 50.0, k, 1.0, seed=2, offset=torch.arange(draws))
    assert set(tokens.tolist()) == set(torch.nonzero(ref_kept(row, 50.0, k, 1.0)).flatten().tolist())


@pytest.mark.parametrize(
    "case", ["normal", "peaked", "flat", "wide", "ties_at_edge", "tiny_tail", "neg_inf"]
)
@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.999])
def test_top_p_histogram_search(case, top_p):
    torch.manual_seed(3)
    vocab = 5003  # no p * V lands exactly on a token boundary of the flat row
    row = {
        "normal": torch.randn(vocab) * 3,
        "peaked": torch.randn(vocab) * 0.3 + torch.where(torch.arange(vocab) < 4, 12.0, 0.0),
        "flat": torch.zeros(vocab),  # one bucket holds everything: the edge by index
        "wide": torch.linspace(-200, 20, vocab)[torch.randperm(vocab)],  # buckets up to the last one
        "ties_at_edge": torch.randint(0, 4, (vocab,)).float(),
        "tiny_tail": torch.cat([torch.zeros(3), torch.full((vocab - 3,), -80.0)]),  # mass in bucket 1023
        "neg_inf": torch.where(torch.rand(vocab) < 0.5, -math.inf, torch.randn(vocab)),
    }[case]
    logits = row.expand(6, vocab).contiguous()
    tokens, _ = run_and_check(logits, 1.0, -1, top_p)
    for b in range(6):
        assert int(tokens[b]) == ref_token(row, 1.0, -1, top_p, b * 7919 + 3), (case, b)


def test_top_p_frequencies_match_reference_large_vocab():
    torch.manual_seed(4)
    vocab, draws = 2000, 20000
    row = torch.randn(vocab) * 2.5
    tokens, _ = sample(row.expand(draws, vocab), 0.9, -1, 0.8, seed=8, offset=torch.arange(draws))
    want = ref_probs_simple(row, 0.9, 0.8)
    freq = torch.bincount(tokens, minlength=vocab).double() / draws
    assert torch.all(want[tokens] > 0)
    assert (freq - want).abs().max() < 0.01
    assert torch.nn.functional.cosine_similarity(freq, want, dim=0) > 0.99


def ref_probs_simple(row, t, p):
    z = row.double() / t
    keep = ref_kept(row, t, -1, p)
    return torch.softmax(z.masked_fill(~keep, -math.inf), 0)


@pytest.mark.parametrize(
    "dtype", [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.slow),
              pytest.param(torch.float16, marks=pytest.mark.slow)]
)
def test_large_vocab_all_paths_exact_token(dtype):
    torch.manual_seed(5)
    vocab = 151936
    logits = (torch.randn(2, vocab) * 3).to(dtype)
    for t, k, p in [(0.8, 50, 0.9), (1.0, -1, 1.0), (0.7, -1, 0.9), (1.0, 20000, 0.95)]:
        tokens, _ = run_and_check(logits, t, k, p)
        for b in range(2):
            assert int(tokens[b]) == ref_token(logits[b].float(), t, k, p, b * 7919 + 3), (dtype, t, k, p)


def test_same_result_for_any_thread_count():
    torch.manual_seed(6)
    logits = torch.randn(37, 3001) * 2
    args = dict(temperature=torch.rand(37) + 0.2, top_k=torch.randint(-1, 100, (37,)),
                top_p=torch.rand(37) * 0.5 + 0.5, seed=torch.arange(37))
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(sample(logits, **args))
    finally:
        torch.set_num_threads(before)
    for tokens, logprobs in results[1:]:
        assert torch.equal(tokens, results[0][0]) and torch.equal(logprobs, results[0][1])
    # and each row as if sampled alone
    for b in (0, 17, 36):
        alone = sample(logits[b : b + 1], **{key: v[b : b + 1] for key, v in args.items()})
        assert int(alone[0]) == int(results[0][0][b]) and float(alone[1]) == float(results[0][1][b])


def test_invalid_rows_on_every_path():
    vocab = 777
    for t, k, p in PATHS:
        logits = torch.randn(4, vocab)
        logits[0, 700] = math.nan  # in the vector tail region
        logits[1, 3] = math.inf
        logits[2] = -math.inf
        tokens, logprobs = sample(logits, t, k, p, seed=1)
        assert tokens[:3].tolist() == [-1, -1, -1] and torch.isnan(logprobs[:3]).all()
        assert 0 <= int(tokens[3]) < vocab


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_split_vocabulary_rows_match_whole_rows(dtype):
    """B < threads splits each row's top-k filter over the vocabulary: same tokens and log-probs as the
    row sampled inside a larger batch (no split), at any thread count, including ties across parts."""
    torch.manual_seed(7)
    vocab = 70001  # parts of unequal length, a tail after the vector loop
    logits = (torch.randn(4, vocab) * 3).to(dtype)
    logits[1, 40000:40100] = logits[1].max() + 1  # a tie group larger than k at the top, in a later part
    logits[2, 5] = math.nan
    args = dict(temperature=torch.tensor([0.8, 1.0, 1.0, 0.6]), top_k=torch.tensor([50, 30, 7, 1]),
                top_p=torch.tensor([0.9, 1.0, 0.5, 1.0]), seed=torch.arange(4) + 11)
    batch = sample(logits, **args)
    assert int(batch[0][2]) == -1
    assert 40000 <= int(batch[0][1]) < 40030
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3, 4):
            torch.set_num_threads(threads)
            for b in range(4):
                alone = sample(logits[b : b + 1], **{key: v[b : b + 1] for key, v in args.items()})
                assert torch.equal(alone[0], batch[0][b : b + 1]), (threads, b)
                assert torch.equal(alone[1], batch[1][b : b + 1]) or (b == 2 and torch.isnan(alone[1]).all())
    finally:
        torch.set_num_threads(before)
    run_and_check(logits[[0, 1, 3]].float(), 0.8, 50, 0.9)
