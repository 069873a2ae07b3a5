"""Caption decoding, written once and shared by validation, the CLI and the demo.

Letters: B batch, P grid cells, D feature dim, V vocabulary size, L decoded length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from captioner.model import Decoder


@dataclass
class DecodedCaption:
    """One decoded caption: word ids without <start>/<end>, its total log-probability
    (including the <end> token when one was emitted) and the attention (L, P) behind each word."""

    tokens: list[int]
    log_prob: float
    attention: torch.Tensor
    finished: bool


@torch.no_grad()
def greedy_decode(
    decoder: Decoder, features: torch.Tensor, start_id: int, end_id: int, max_len: int = 20
) -> list[DecodedCaption]:
    """Most probable word at every step for a whole batch at once.

    features (B, P, D) → B captions. A caption that emits no <end> within `max_len` words is
    returned as it stands (finished=False) rather than dropped.
    """
    B = features.shape[0]
    features, keys, state = decoder.begin(features)
    tokens = torch.full((B,), start_id, dtype=torch.long, device=features.device)
    words = torch.zeros(B, max_len, dtype=torch.long, device=features.device)
    attention = features.new_zeros(B, max_len, features.shape[1])
    log_prob = features.new_zeros(B)
    length = torch.full((B,), max_len, dtype=torch.long, device=features.device)
    running = torch.ones(B, dtype=torch.bool, device=features.device)
    for t in range(max_len + 1):
        logits, state, alpha = decoder.step(tokens, state, keys, features)
        step_log_probs = logits.float().log_softmax(dim=-1)
        if t == max_len:  # no room for another word: only <end> may still be emitted
            ends_here = running & (step_log_probs.argmax(-1) == end_id)
            log_prob += torch.where(ends_here, step_log_probs[:, end_id], 0.0)
            running &= ~ends_here
            break
        tokens = step_log_probs.argmax(dim=-1)
        log_prob += torch.where(running, step_log_probs.gather(1, tokens[:, None]).squeeze(1), 0.0)
        ended = running & (tokens == end_id)
        length[ended] = t
        running &= ~ended
        words[:, t] = tokens
        attention[:, t] = alpha
        if not running.any():
            break
    return [
        DecodedCaption(
            tokens=words[i, : length[i]].tolist(),
            log_prob=float(log_prob[i]),
            attention=attention[i, : length[i]].cpu(),
            finished=not bool(running[i]),
        )
        for i in range(B)
    ]
