"""Caption decoding, written once and shared by validation, evaluation, the CLI and the demo.

One batched beam search serves every caller; greedy decoding is beam search with K = 1.
All B·K hypotheses advance in one decoder step, so a batch costs about as much per step as
one image does on a GPU, and far less than B separate loops on a CPU.

Letters: B batch, K beam, P grid cells, D feature dim, V vocabulary size, L decoded length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from captioner.model import Decoder


@dataclass(frozen=True)
class DecodingOptions:
    """How to search. `length_penalty` α divides a hypothesis' log-probability by
    ((5 + n) / 6)^α, n = words + <end> (Wu et al., 2016): 0 ranks by raw log-probability,
    which favours short captions; larger values favour longer ones. A hypothesis may not end
    before `min_len` words; one still running after `max_len` words is returned unfinished."""

    beam_size: int = 3
    max_len: int = 20
    min_len: int = 1
    length_penalty: float = 0.0
    top_n: int = 1

    def __post_init__(self):
        if self.beam_size < 1:
            raise ValueError(f"beam size must be at least 1, got {self.beam_size}")
        if not 0 <= self.min_len <= self.max_len:
            raise ValueError(f"need 0 <= min_len <= max_len, got min_len={self.min_len} max_len={self.max_len}")
        if not 1 <= self.top_n <= self.beam_size:
            raise ValueError(f"top_n must be between 1 and the beam size {self.beam_size}, got {self.top_n}")
        if self.length_penalty < 0:
            raise ValueError(f"length penalty must be >= 0, got {self.length_penalty}")


@dataclass
class DecodedCaption:
    """One hypothesis: word ids without <start>/<end>; its total log-probability (including
    <end> when one was emitted); its ranking score (log-probability after the length penalty);
    the attention (L, P) behind each word; whether it ended with <end>."""

    tokens: list[int]
    log_prob: float
    score: float
    attention: torch.Tensor
    finished: bool


def _length_norm(words: int | torch.Tensor, alpha: float):
    return ((5.0 + words) / 6.0) ** alpha


@torch.no_grad()
def beam_search(
    decoder: Decoder, features: torch.Tensor, start_id: int, end_id: int, options: DecodingOptions
) -> list[list[DecodedCaption]]:
    """features (B, P, D) → for each image its `top_n` best hypotheses, best first.

    Each step ranks the 2K best continuations of the K live hypotheses of an image: an <end>
    among the first K ranks is set aside as finished, and the K best others stay live, so the
    beam never shrinks. An image is done once K hypotheses have finished; with K = 1 that is
    the first <end>, which makes beam 1 exactly greedy decoding. When too few finish within
    `max_len` words, the best unfinished hypotheses fill the list.
    """
    B, P, _ = features.shape
    K, L, alpha = options.beam_size, options.max_len, options.length_penalty
    device = features.device
    features, keys, (h, c) = decoder.begin(features)
    features, keys = features.repeat_interleave(K, 0), keys.repeat_interleave(K, 0)
    state = h.repeat_interleave(K, 0), c.repeat_interleave(K, 0)

    # live hypotheses: only beam 0 starts, so the first step does not pick K copies of one word
    live_log_prob = torch.full((B, K), float("-inf"), device=device)
    live_log_prob[:, 0] = 0.0
    live_words = torch.zeros(B, K, L, dtype=torch.long, device=device)
    live_attention = features.new_zeros(B, K, L, P, dtype=torch.float)
    tokens = torch.full((B * K,), start_id, dtype=torch.long, device=device)
    # finished hypotheses, best first
    done_score = torch.full((B, K), float("-inf"), device=device)
    done_log_prob = torch.full((B, K), float("-inf"), device=device)
    done_length = torch.zeros(B, K, dtype=torch.long, device=device)
    done_words = torch.zeros(B, K, L, dtype=torch.long, device=device)
    done_attention = features.new_zeros(B, K, L, P, dtype=torch.float)
    done_count = torch.zeros(B, dtype=torch.long, device=device)
    image_done = torch.zeros(B, dtype=torch.bool, device=device)
    rank = torch.arange(2 * K, device=device)
    offsets = (torch.arange(B, device=device) * K).unsqueeze(1)

    for t in range(L + 1):
        logits, state, alpha_t = decoder.step(tokens, state, keys, features)
        log_probs = logits.float().log_softmax(dim=-1).view(B, K, -1)
        if t < options.min_len:
            log_probs[..., end_id] = float("-inf")
        V = log_probs.shape[-1]
        totals = (live_log_prob.unsqueeze(-1) + log_probs).view(B, K * V)
        top_log_prob, top_index = totals.topk(min(2 * K, K * V), dim=1)
        top_beam, top_word = top_index // V, top_index % V
        alpha_t = alpha_t.float().view(B, K, P)

        # set aside the <end>s that rank among the first K
        ending = (top_word == end_id) & (rank[: top_word.shape[1]] < K) & top_log_prob.isfinite()
        ending &= ~image_done.unsqueeze(1)
        if ending.any():
            new_score = torch.where(ending, top_log_prob / _length_norm(t + 1, alpha), float("-inf"))
            beam_index = top_beam.unsqueeze(-1).expand(-1, -1, L)
            new_attention = live_attention.gather(1, top_beam[..., None, None].expand(-1, -1, L, P))
            pool_score = torch.cat([done_score, new_score], dim=1)
            keep = pool_score.topk(K, dim=1).indices
            done_score = pool_score.gather(1, keep)
            done_log_prob = torch.cat([done_log_prob, top_log_prob], 1).gather(1, keep)
            done_length = torch.cat([done_length, torch.full_like(top_beam, t)], 1).gather(1, keep)
            done_words = torch.cat([done_words, live_words.gather(1, beam_index)], 1).gather(
                1, keep.unsqueeze(-1).expand(-1, -1, L))
            done_attention = torch.cat([done_attention, new_attention], 1).gather(
                1, keep[..., None, None].expand(-1, -1, L, P))
            done_count += ending.sum(dim=1)
            image_done |= done_count >= K
        if t == L or bool(image_done.all()):
            break

        # the K best continuations that did not end stay live
        continuing = top_word != end_id
        order = torch.where(continuing, rank[: top_word.shape[1]], 2 * K).argsort(dim=1)[:, :K]
        beam, word = top_beam.gather(1, order), top_word.gather(1, order)
        live_log_prob = torch.where(continuing.gather(1, order), top_log_prob.gather(1, order), float("-inf"))
        source = (offsets + beam).view(-1)
        state = state[0][source], state[1][source]
        live_words = live_words.gather(1, beam.unsqueeze(-1).expand(-1, -1, L))
        live_words[:, :, t] = word
        live_attention = live_attention.gather(1, beam[..., None, None].expand(-1, -1, L, P))
        live_attention[:, :, t] = alpha_t.gather(1, beam.unsqueeze(-1).expand(-1, -1, P))
        tokens = word.view(-1)

    return _collect(options, t, done_count, done_score, done_log_prob, done_length, done_words, done_attention,
                    live_log_prob, live_words, live_attention)


def _collect(options, steps, done_count, done_score, done_log_prob, done_length, done_words, done_attention,
             live_log_prob, live_words, live_attention) -> list[list[DecodedCaption]]:
    """Per image: its finished hypotheses best first, then the best unfinished ones if too few finished."""
    live_length = min(steps, options.max_len)
    live_score = live_log_prob / _length_norm(live_length, options.length_penalty)
    live_order = live_score.argsort(dim=1, descending=True)
    done_count, done_length = done_count.tolist(), done_length.tolist()
    results = []
    for i in range(len(done_count)):
        hypotheses = [
            DecodedCaption(done_words[i, k, : done_length[i][k]].tolist(), float(done_log_prob[i, k]),
                           float(done_score[i, k]), done_attention[i, k, : done_length[i][k]].cpu(), True)
            for k in range(min(done_count[i], options.top_n))
        ]
        for k in live_order[i, : options.top_n - len(hypotheses)].tolist():
            if live_log_prob[i, k].isfinite():
                hypotheses.append(DecodedCaption(live_words[i, k, :live_length].tolist(), float(live_log_prob[i, k]),
                                                 float(live_score[i, k]), live_attention[i, k, :live_length].cpu(),
                                                 False))
        results.append(hypotheses)
    return results


def greedy_decode(
    decoder: Decoder, features: torch.Tensor, start_id: int, end_id: int, max_len: int = 20
) -> list[DecodedCaption]:
    """The most probable word at every step, for a whole batch: features (B, P, D) → B captions."""
    options = DecodingOptions(beam_size=1, max_len=max_len, min_len=0)
    return [hypotheses[0] for hypotheses in beam_search(decoder, features, start_id, end_id, options)]
