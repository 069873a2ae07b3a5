"""Faster ways to compute what captioner/model.py computes, each used where it was measured.

model.py is the paper written plainly; the code here gives the same function (to float rounding,
checked against the plain code by tests/test_fast_paths.py). Why each is faster, and by how much,
is in docs/performance.md.

- CPU tricks, measured on a CPU in float32 with a frozen encoder; model.py asks `enabled` (the
  one switch) before taking them:
  `one_image_at_a_time` runs the encoder's backbone image by image;
  `additive_scores` is the paper's MLP score with tanh(u) as 2σ(2u) − 1 and a hand-written backward.
- The fused teacher forcing (`teacher_forcing_fused`, config key `train.fused_decoder`; its
  `recurrent_step` is what `train.compile` compiles) reorders work without changing the arithmetic
  of any value, so it runs on every device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from captioner.model import Decoder


def enabled(tensor: torch.Tensor, frozen: bool = True) -> bool:
    """Whether model.py may take a CPU trick for work on `tensor` (the rules are in `applies`).
    `frozen`: whether every module the trick runs is in eval mode; a trick that splits the batch
    must say, since batch norm in training mode depends on the batch."""
    device_type = tensor.device.type
    autocast = torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
    return applies(device_type, tensor.dtype, autocast, frozen)


def applies(device_type: str, dtype: torch.dtype, autocast: bool, frozen: bool) -> bool:
    """The switch's decision, apart from any tensor so that it can be checked without a GPU: the
    CPU tricks run only where they were measured, on a CPU, in float32 outside autocast, with
    frozen modules.

    Elsewhere they are unmeasured or wrong. Under bf16 (CUDA's `train.amp`, or CPU autocast)
    `additive_scores` subtracts Σw from a sum of about the same size, which cancels when the
    energy weights share a sign, and its attention maps carry several times a plain bf16 tanh's
    error. Split into single images, batch norm in training mode (`model.encoder.fine_tune` > 0)
    would normalise each image by its own statistics.
    """
    return device_type == "cpu" and dtype == torch.float32 and not autocast and frozen


def one_image_at_a_time(function: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """torch.cat of `function` over the images (1, ...) of `images` (B, ...): function(images)
    when no module in `function` depends on the batch. On a CPU, oneDNN's depthwise convolutions
    are memory-bound and cost more per image in a batch than one at a time."""
    return torch.cat([function(image) for image in images.split(1)])


def additive_scores(keys: torch.Tensor, query: torch.Tensor, energy: nn.Linear) -> torch.Tensor:
    """keys (B, P, A), query (B, A), energy Linear(A, 1) → energy(tanh(keys + query)) (B, P)."""
    return _AdditiveScore.apply(keys, query, energy.weight.view(-1), energy.bias)


class _AdditiveScore(torch.autograd.Function):
    """keys (B, P, A), query (B, A), w (A,), b (1,) → wᵀtanh(keys + query) + b (B, P): the
    paper's MLP score, with hand-written gradients.

    tanh(u) is computed as 2σ(2u) − 1, the same function, because torch's CPU sigmoid is much
    faster than its tanh. The backward broadcasts where nn.Linear(A, 1) would run a thin
    (B·P, 1) × (1, A) matrix product, which BLAS handles poorly. The result is 2 Σ_a w_a σ_a
    shifted by −Σw + b: a difference of two large numbers, exact enough in float32 only.
    """

    @staticmethod
    def forward(ctx, keys: torch.Tensor, query: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        w = w.to(keys.dtype)
        half_plus = torch.add(keys, query.unsqueeze(1)).mul_(2).sigmoid_()  # (1 + tanh) / 2, (B, P, A)
        ctx.save_for_backward(half_plus, w)
        return (half_plus @ w).mul_(2).add_(b.to(keys.dtype) - w.sum())  # (B, P)

    @staticmethod
    def backward(ctx, grad):
        half_plus, w = ctx.saved_tensors
        grad_keys = grad_query = grad_w = grad_b = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # d tanh(u)/du = 1 − tanh² = 4 s (1 − s) with s = σ(2u)
            grad_u = torch.addcmul(half_plus, half_plus, half_plus, value=-1)
            grad_u.mul_(grad.unsqueeze(-1)).mul_(4 * w)  # (B, P, A)
            grad_keys = grad_u if ctx.needs_input_grad[0] else None
            grad_query = grad_u.sum(1) if ctx.needs_input_grad[1] else None
        if ctx.needs_input_grad[2]:
            grad_w = 2 * torch.einsum("bp,bpa->a", grad, half_plus) - grad.sum()
        if ctx.needs_input_grad[3]:
            grad_b = grad.sum().view(1)
        return grad_keys, grad_query, grad_w, grad_b


def teacher_forcing_fused(
    decoder: Decoder,
    features: torch.Tensor,
    captions: torch.Tensor,
    image_index: torch.Tensor,
    running_per_step: list[int],
    compiled_step: Callable | None = None,
    sample: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`Decoder.forward`'s teacher forcing with the same numbers, in less time.

    features (B, P, D) per image, captions (N, T) longest first, image_index (N,),
    running_per_step: captions still running at each of the T-1 steps → logits (N, T-1, V),
    alphas (N, T-1, P), zero where padded, and with `sample` (hard attention) the sampled
    locations (N, T-1), -1 where padded (else None). The per-image work (feature norm, attention keys,
    initial state) runs once per image rather than once per caption; everything that does not
    depend on the recurrence (the embedding's share of the LSTM gates, the deep output, the
    vocabulary projection) runs as one matrix product over all steps, so the time loop holds only
    attention and the LSTM's recurrent product. Per-step tensors are time-major, so taking the
    running rows of step t is a cheap view whose gradient is no larger than that step.
    `compiled_step`: `recurrent_step` compiled (train.compile), else None.
    """
    features, keys, (h, c) = decoder.begin(features)
    features, keys, h, c = features[image_index], keys[image_index], h[image_index], c[image_index]
    N, E = len(captions), decoder.embedding.embedding_dim
    lstm = decoder.lstm
    embedded = decoder.embedding(captions[:, :-1].T)  # (T-1, N, E)
    weight_embedded, weight_context = lstm.weight_ih.split([E, features.shape[-1]], dim=1)
    gates_in = F.linear(embedded, weight_embedded, lstm.bias_ih + lstm.bias_hh)  # (T-1, N, 4H)
    step = compiled_step or recurrent_step
    step_keys = _RunningRows.apply(keys, running_per_step)
    step_features = _RunningRows.apply(features, running_per_step)
    hiddens, contexts, alphas, locations = [], [], [], []
    for n, embedded_t, gates_in_t, keys_t, features_t in zip(running_per_step, embedded.unbind(0), gates_in.unbind(0),
                                                             step_keys, step_features):
        h, c, context, alpha, location = step(decoder, h[:n], c[:n], keys_t, features_t, embedded_t[:n],
                                              gates_in_t[:n], weight_context, sample)
        hiddens.append(h)
        contexts.append(context)
        alphas.append(F.pad(alpha, (0, 0, 0, N - n)))
        if sample:
            locations.append(F.pad(location, (0, N - n), value=-1))
    # rows of step t are the first n_t captions, so concatenating the steps packs the real
    # tokens time-major, which is the order of `real` below
    hiddens, contexts = torch.cat(hiddens), torch.cat(contexts)  # (real tokens, H), (real tokens, D)
    real = torch.arange(N, device=captions.device) < torch.tensor(
        running_per_step, device=captions.device).unsqueeze(1)  # (T-1, N)
    if decoder.deep_output:
        outputs = embedded[real] + decoder.out_hidden(hiddens) + decoder.out_context(contexts)
    else:
        outputs = hiddens
    logits = decoder.out(decoder.dropout(outputs))  # (real tokens, V)
    padded = logits.new_zeros(*real.shape, logits.shape[-1]).index_put((real,), logits)  # (T-1, N, V)
    locations = torch.stack(locations, dim=1) if sample else None
    return padded.transpose(0, 1), torch.stack(alphas, dim=1), locations


def recurrent_step(decoder: Decoder, h, c, keys, features, embedded, gates_in, weight_context, sample: bool = False):
    """The part of a step that depends on the previous one: (h, c) each (N, H), keys (N, P, A),
    features (N, P, D), embedded = E y_{t-1} (N, E), gates_in (N, 4H) → new (h, c), context (N, D),
    alpha (N, P), and the sampled locations (N,) of a hard-attention pass (`sample`, see
    `Decoder.attend`) or None."""
    context, alpha, location = decoder.attend(keys, features, h, embedded, sample)
    gates = gates_in + F.linear(context, weight_context) + F.linear(h, decoder.lstm.weight_hh)  # (N, 4H)
    in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, dim=1)  # nn.LSTMCell's order
    c = torch.sigmoid(forget_gate) * c + torch.sigmoid(in_gate) * torch.tanh(cell_gate)
    h = torch.sigmoid(out_gate) * torch.tanh(c)
    return h, c, context, alpha, location


class _RunningRows(torch.autograd.Function):
    """x (N, ...) → the views x[:n] for each n of `counts`, in one autograd node.

    Slicing x once per step instead makes every step's backward allocate, zero-fill and add a
    gradient of x's full size; here the steps' gradients are summed into one buffer, each into
    its own rows.

    Unlike the CPU tricks this runs on every device and dtype, because it is harmless there: each
    row of x's gradient is the sum of the same step gradients that autograd would add (up to the
    order of the additions), in x's dtype as autograd's, and the work is less than autograd's (one
    zero-fill instead of one per step, and additions of n rows instead of N), so no device pays more.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, counts: list[int]):
        ctx.counts, ctx.shape = counts, x.shape
        return tuple(x[:n] for n in counts)

    @staticmethod
    def backward(ctx, *grads):
        total = None
        for n, grad in zip(ctx.counts, grads):
            if grad is None:
                continue
            if total is None:
                total = grad.new_zeros(ctx.shape)
            total[:n] += grad
        return total, None
