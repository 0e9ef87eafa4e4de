"""Multi-adapter segmented LoRA (SGMV style): wrappers, fake kernels and autograd of torch.ops.mint.lora_*.

Layout (shared by every function here; see csrc/ops.cpp):
    x            [T, in]       float32 / bfloat16 / float16, any strides
    y            [T, out]      dtype of x
    lora_a       [N, R, in]    adapter pool; slot n uses rows [0, lora_ranks[n])
    lora_b       [N, R, out]   stored rank-major (B transposed)
    h            [T, R]        dtype of x; columns >= rank and rows without adapter are 0
    seg_indptr   [S + 1] int64 non-decreasing, seg_indptr[0] == 0, seg_indptr[S] == T
    seg_adapter  [S] int64     slot of each segment, -1 = no adapter (rows untouched, zero gradient)
    lora_ranks   [N] int64     0..R
    lora_scales  [N] float32   per-slot scaling (alpha / rank)
Products accumulate in float32; results are rounded once to the dtype of the inputs.
"""

from __future__ import annotations

import torch

_ops = torch.ops.mint


# ---- fake (meta) kernels -------------------------------------------------------------------------


@torch.library.register_fake("mint::lora_shrink")
def _lora_shrink_fake(x, lora_a, seg_indptr, seg_adapter, lora_ranks):
    return x.new_empty((x.shape[0], lora_a.shape[1]))


@torch.library.register_fake("mint::lora_expand")
def _lora_expand_fake(y, h, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales):
    return y.new_empty(y.shape)


@torch.library.register_fake("mint::lora_expand_")
def _lora_expand_inplace_fake(y, h, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales):
    return None


@torch.library.register_fake("mint::lora_expand_backward")
def _lora_expand_backward_fake(grad_y, h, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales):
    return h.new_empty(h.shape), lora_b.new_empty(lora_b.shape)


@torch.library.register_fake("mint::lora_shrink_backward")
def _lora_shrink_backward_fake(grad_h, x, lora_a, seg_indptr, seg_adapter, lora_ranks):
    return x.new_empty(x.shape), lora_a.new_empty(lora_a.shape)


@torch.library.register_fake("mint::lora_apply_forward")
def _lora_apply_forward_fake(y, x, lora_a, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales):
    return y.new_empty(y.shape), x.new_empty((x.shape[0], lora_a.shape[1]))


@torch.library.register_fake("mint::lora_apply_forward_")
def _lora_apply_forward_inplace_fake(y, x, lora_a, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales):
    return x.new_empty((x.shape[0], lora_a.shape[1]))


@torch.library.register_fake("mint::lora_apply_backward")
def _lora_apply_backward_fake(grad_out, x, h, lora_a, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales):
    return x.new_empty(x.shape), lora_a.new_empty(lora_a.shape), lora_b.new_empty(lora_b.shape)


@torch.library.register_fake("mint::lora_apply")
def _lora_apply_fake(y, x, lora_a, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales):
    return y.new_empty(y.shape)


@torch.library.register_fake("mint::lora_apply_")
def _lora_apply_inplace_fake(y, x, lora_a, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales):
    return y


@torch.library.register_fake("mint::lora_rows_")
def _lora_rows_inplace_fake(y, x, lora_a, lora_b, row_slot, lora_ranks, lora_scales):
    return None


# ---- autograd ------------------------------------------------------------------------------------


def _shrink_setup_context(ctx, inputs, output):
    x, lora_a, seg_indptr, seg_adapter, lora_ranks = inputs
    ctx.save_for_backward(x, lora_a, seg_indptr, seg_adapter, lora_ranks)


def _shrink_backward(ctx, grad_h):
    x, lora_a, seg_indptr, seg_adapter, lora_ranks = ctx.saved_tensors
    need_x, need_a = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (need_x or need_a):
        return None, None, None, None, None
    grad_x, grad_a = _ops.lora_shrink_backward(grad_h, x, lora_a, seg_indptr, seg_adapter, lora_ranks)
    return (grad_x if need_x else None), (grad_a if need_a else None), None, None, None


def _expand_setup_context(ctx, inputs, output):
    _, h, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales = inputs
    ctx.save_for_backward(h, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales)


def _expand_backward(ctx, grad_out):
    h, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales = ctx.saved_tensors
    need_y, need_h, need_b = ctx.needs_input_grad[:3]
    grad_h = grad_b = None
    if need_h or need_b:
        grad_h, grad_b = _ops.lora_expand_backward(
            grad_out, h, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales
        )
    return (
        grad_out if need_y else None,
        grad_h if need_h else None,
        grad_b if need_b else None,
        None,
        None,
        None,
        None,
    )


torch.library.register_autograd(
    "mint::lora_shrink", _shrink_backward, setup_context=_shrink_setup_context
)
torch.library.register_autograd(
    "mint::lora_expand", _expand_backward, setup_context=_expand_setup_context
)


# ---- public wrappers -----------------------------------------------------------------------------


def lora_shrink(
    x: torch.Tensor,
    lora_a: torch.Tensor,
    seg_indptr: torch.Tensor,
    seg_adapter: torch.Tensor,
    lora_ranks: torch.Tensor,
) -> torch.Tensor:
    """LoRA down-projection per segment: ``h[t, :r] = x[t] @ lora_a[n, :r].T`` for the slot n of t's segment.

    Args:
        x: [T, in] float32 / bfloat16 / float16, any strides.
        lora_a: [N, R, in], dtype of x.
        seg_indptr: int64 [S + 1]; seg_adapter: int64 [S] (-1 = no adapter); lora_ranks: int64 [N].
    Returns:
        h: [T, R], dtype of x; columns >= lora_ranks[n] and rows of -1 segments are 0.
    Differentiable with respect to x and lora_a.
    """
    return _ops.lora_shrink(x, lora_a, seg_indptr, seg_adapter, lora_ranks)


def lora_expand(
    y: torch.Tensor,
    h: torch.Tensor,
    lora_b: torch.Tensor,
    seg_indptr: torch.Tensor,
    seg_adapter: torch.Tensor,
    lora_ranks: torch.Tensor,
    lora_scales: torch.Tensor,
) -> torch.Tensor:
    """LoRA up-projection per segment: ``y[t] + lora_scales[n] * h[t, :r] @ lora_b[n, :r]``, as a new tensor.

    Args:
        y: [T, out] float32 / bfloat16 / float16, any strides.
        h: [T, R], dtype of y (as returned by :func:`lora_shrink`; columns >= rank are ignored).
        lora_b: [N, R, out], dtype of y.
        seg_indptr: int64 [S + 1]; seg_adapter: int64 [S]; lora_ranks: int64 [N]; lora_scales: float32 [N].
    Returns:
        [T, out] contiguous, dtype of y; rows of -1 segments are bit-identical copies of y.
    Differentiable with respect to y, h and lora_b.
    """
    return _ops.lora_expand(y, h, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales)


def lora_expand_(
    y: torch.Tensor,
    h: torch.Tensor,
    lora_b: torch.Tensor,
    seg_indptr: torch.Tensor,
    seg_adapter: torch.Tensor,
    lora_ranks: torch.Tensor,
    lora_scales: torch.Tensor,
) -> torch.Tensor:
    """In-place :func:`lora_expand`: adds the LoRA delta into ``y`` [T, out] and returns ``y``.

    Same shapes and dtypes as :func:`lora_expand`; rows of -1 segments are not written.
    Not differentiable (for inference, e.g. adding into a base layer's output buffer).
    """
    _ops.lora_expand_(y, h, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales)
    return y


def lora_apply(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    seg_indptr: torch.Tensor,
    seg_adapter: torch.Tensor,
    lora_ranks: torch.Tensor,
    lora_scales: torch.Tensor,
) -> torch.Tensor:
    """``y + scale * (x @ A.T) @ B`` per segment: the full LoRA delta added to a base layer output.

    Args:
        y: [..., out] base output; x: [..., in] layer input with the same leading dims (T tokens in all,
            in row-major order); both float32 / bfloat16 / float16.
        lora_a: [N, R, in]; lora_b: [N, R, out]; same dtype as x.
        seg_indptr: int64 [S + 1] over the T flattened tokens; seg_adapter: int64 [S];
        lora_ranks: int64 [N]; lora_scales: float32 [N].
    Returns:
        [..., out], dtype of y. Differentiable with respect to y, x, lora_a and lora_b.
    """
    if y.shape[:-1] != x.shape[:-1]:
        raise ValueError(f"lora_apply: y {tuple(y.shape)} and x {tuple(x.shape)} must share leading dims")
    return _ops.lora_apply(y, x, lora_a, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales)


def lora_apply_(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    seg_indptr: torch.Tensor,
    seg_adapter: torch.Tensor,
    lora_ranks: torch.Tensor,
    lora_scales: torch.Tensor,
) -> torch.Tensor:
    """In-place :func:`lora_apply` that stays differentiable: adds the delta into ``y`` and returns ``y``.

    Same arguments as :func:`lora_apply`; ``y`` must be contiguous, and neither a leaf that requires grad
    nor a tensor anything else still reads (its old value is gone; autograd's version counter catches
    misuse). Gradients equal :func:`lora_apply`'s; it only saves the copy of ``y``.
    """
    if not y.is_contiguous():
        raise ValueError(f"lora_apply_: y must be contiguous, got strides {tuple(y.stride())}")
    if y.shape[:-1] != x.shape[:-1]:
        raise ValueError(f"lora_apply_: y {tuple(y.shape)} and x {tuple(x.shape)} must share leading dims")
    return _ops.lora_apply_(y, x, lora_a, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales)


def segments_from_adapter_ids(
    adapter_ids: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Groups tokens by adapter: a stable sort by id, then run-length encoding.

    Args:
        adapter_ids: int64 [T], the slot of each token (-1 = no adapter).
    Returns:
        perm: int64 [T] such that ``adapter_ids[perm]`` is sorted (ties keep token order), so
            ``x[perm]`` has each adapter's tokens contiguous;
        seg_indptr: int64 [S + 1], one segment per distinct id;
        seg_adapter: int64 [S], the distinct ids in ascending order.
    """
    if adapter_ids.dim() != 1 or adapter_ids.dtype != torch.int64:
        raise ValueError(
            f"adapter_ids must be a 1-D int64 tensor, got {adapter_ids.dtype} of shape "
            f"{tuple(adapter_ids.shape)}"
        )
    sorted_ids, perm = torch.sort(adapter_ids, stable=True)
    seg_adapter, counts = torch.unique_consecutive(sorted_ids, return_counts=True)
    seg_indptr = torch.zeros(seg_adapter.numel() + 1, dtype=torch.int64, device=adapter_ids.device)
    torch.cumsum(counts, 0, out=seg_indptr[1:])
    return perm, seg_indptr, seg_adapter


def lora_apply_by_token(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    adapter_ids: torch.Tensor,
    lora_ranks: torch.Tensor,
    lora_scales: torch.Tensor,
) -> torch.Tensor:
    """:func:`lora_apply` with one adapter slot per token (decode batches, tokens in any order).

    Args:
        y: [..., out]; x: [..., in] (T tokens in all); adapter_ids: int64 [T], slot per token
            (-1 = no adapter); lora_a, lora_b, lora_ranks, lora_scales as in :func:`lora_apply`.
    Returns:
        [..., out], dtype of y, in the original token order. Differentiable like :func:`lora_apply`.
    """
    x2 = x.reshape(-1, x.shape[-1])
    y2 = y.reshape(-1, y.shape[-1])
    if adapter_ids.shape != (x2.shape[0],):
        raise ValueError(
            f"adapter_ids must have one entry per token ({x2.shape[0]}), got shape {tuple(adapter_ids.shape)}"
        )
    perm, seg_indptr, seg_adapter = segments_from_adapter_ids(adapter_ids)
    out_sorted = lora_apply(
        y2[perm], x2[perm], lora_a, lora_b, seg_indptr, seg_adapter, lora_ranks, lora_scales
    )
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel(), dtype=perm.dtype, device=perm.device)
    return out_sorted[inverse].reshape(y.shape)


def lora_rows_(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    row_slot: torch.Tensor,
    lora_ranks: torch.Tensor,
    lora_scales: torch.Tensor,
) -> torch.Tensor:
    """Per-row fused LoRA for decode-sized batches, in place: ``y[t] += scale[n] * (x[t] @ A[n,:r].T) @ B[n,:r]``.

    Args:
        y: [T, out] float32, unit stride in the last dim (updated in place; rows with slot -1 or rank 0
            are not written).
        x: [T, in] float32; lora_a: [N, R, in]; lora_b: [N, R, out] float32.
        row_slot: int64 [T], the adapter slot of each row (-1 = none), rows in any order.
        lora_ranks: int64 [N]; lora_scales: float32 [N].
    Returns:
        y. Each row is computed independently of the others, in an order fixed by the layer sizes, so a
        row gives the same bits in any batch. CPU only; not differentiable (use :func:`lora_apply` to train).
    """
    _ops.lora_rows_(y, x, lora_a, lora_b, row_slot, lora_ranks, lora_scales)
    return y
