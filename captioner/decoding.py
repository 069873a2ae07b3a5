"""Caption decoding, written once and shared by validation, evaluation, the CLI and the demo.

One batched beam search serves every caller; greedy decoding is beam search with K = 1.
All B·K hypotheses advance in one decoder step, so a batch costs about as much per step as
one image does on a GPU, and far less than B separate loops on a CPU. `sample` draws K captions
per image the same batched way, keeping gradients, for self-critical training (captioner.scst).

Letters: B batch, K beam (or samples per image), P grid cells, D feature dim, V vocabulary size,
L decoded length.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    decoder: Decoder, features: torch.Tensor, start_id: int, end_id: int, options: DecodingOptions,
    banned_ids: Sequence[int] = (),
) -> list[list[DecodedCaption]]:
    """features (B, P, D) → for each image its `top_n` best hypotheses, best first.

    `<start>` and the `banned_ids` (a vocabulary's `<pad>`) are never emitted: a word without
    a place in the caption would still own an attention map, and words and maps would fall out
    of line. Only `<end>` ends a caption.

    Each step ranks the 2K best continuations of the K live hypotheses of an image: an <end>
    among the first K ranks is set aside as finished, and the K best others stay live, so the
    beam never shrinks. An image is done once K hypotheses have finished; with K = 1 that is
    the first <end>, which makes beam 1 exactly greedy decoding. When too few finish within
    `max_len` words, the best unfinished hypotheses fill the list.

    A done image leaves the batch, so a batch costs what its images need, not B times its
    longest caption. Steps record each live slot's word, parent slot and attention; a
    hypothesis is read back from its last slot once decoding ends, rather than copying every
    hypothesis's history forward at every step.
    """
    B, P, _ = features.shape
    K, L, alpha = options.beam_size, options.max_len, options.length_penalty
    device = features.device
    features, keys, state = decoder.begin(features)
    features, keys = features.repeat_interleave(K, 0), keys.repeat_interleave(K, 0)
    state = tuple(part.repeat_interleave(K, 0) for part in state)
    history = _History(L, B, K, P, device)

    active = torch.arange(B, device=device)  # images still decoding; the rows below follow it
    # live hypotheses: only beam 0 starts, so the first step does not pick K copies of one word
    live_log_prob = torch.full((B, K), float("-inf"), device=device)
    live_log_prob[:, 0] = 0.0
    tokens = torch.full((B * K,), start_id, dtype=torch.long, device=device)
    done = _Finished(B, K, device)
    rank = torch.arange(2 * K, device=device)
    beam_rows = torch.arange(K, device=device)
    never = torch.tensor(sorted({start_id, *banned_ids}), device=device)

    for t in range(L + 1):
        logits, state, alpha_t = decoder.step(tokens, state, keys, features)
        log_probs = logits.float().log_softmax(dim=-1).view(len(active), K, -1)
        log_probs[..., never] = float("-inf")
        if t < options.min_len:
            log_probs[..., end_id] = float("-inf")
        V = log_probs.shape[-1]
        totals = (live_log_prob.unsqueeze(-1) + log_probs).view(len(active), K * V)
        top_log_prob, top_index = totals.topk(min(2 * K, K * V), dim=1)
        top_beam, top_word = top_index // V, top_index % V

        # set aside the <end>s that rank among the first K
        ending = (top_word == end_id) & (rank[: top_word.shape[1]] < K) & top_log_prob.isfinite()
        if ending.any():
            done.add(active, ending, top_log_prob, top_beam, t, alpha)
        if t == L:
            # a hypothesis whose <end> was just set aside is finished: it must not also be
            # returned as an unfinished one with the same words
            ended = torch.zeros_like(top_beam).scatter_add_(1, top_beam, ending.long()) > 0
            live_log_prob = live_log_prob.masked_fill(ended[:, :K], float("-inf"))
            break

        # the K best continuations that did not end stay live
        continuing = top_word != end_id
        order = torch.where(continuing, rank[: top_word.shape[1]], 2 * K).argsort(dim=1)[:, :K]
        beam, word = top_beam.gather(1, order), top_word.gather(1, order)
        live_log_prob = torch.where(continuing.gather(1, order), top_log_prob.gather(1, order), float("-inf"))
        history.record(t, active, word, beam, alpha_t.float().view(len(active), K, P))
        source = (torch.arange(len(active), device=device) * K).unsqueeze(1) + beam  # (b, K) rows to continue

        running = done.count[active] < K
        if not bool(running.all()):
            if not bool(running.any()):
                break
            kept = running.nonzero().squeeze(1)
            active, source, word, live_log_prob = active[kept], source[kept], word[kept], live_log_prob[kept]
            kept_rows = (kept.unsqueeze(1) * K + beam_rows).view(-1)
            keys, features = keys[kept_rows], features[kept_rows]
        state = tuple(part[source.view(-1)] for part in state)
        tokens = word.view(-1)

    unfinished = done.count[active] < K
    active, live_log_prob = active[unfinished], live_log_prob[unfinished]
    return _collect(options, history, min(t, L), done, active, live_log_prob)


class _Finished:
    """The K best finished hypotheses of each image, best first: ranking score, log-probability,
    and (words, live slot after the last word), which say where `_History` reads them back."""

    def __init__(self, B: int, K: int, device: torch.device):
        self.score = torch.full((B, K), float("-inf"), device=device)
        self.log_prob = torch.full((B, K), float("-inf"), device=device)
        self.length = torch.zeros(B, K, dtype=torch.long, device=device)
        self.slot = torch.zeros(B, K, dtype=torch.long, device=device)
        self.count = torch.zeros(B, dtype=torch.long, device=device)  # how many ever finished

    def add(self, images: torch.Tensor, ending: torch.Tensor, log_prob: torch.Tensor, slot: torch.Tensor,
            words: int, alpha: float) -> None:
        """Merge the candidates of `images` (b,) marked `ending` (b, 2K), each with its total
        log-probability and live slot (b, 2K), all `words` long, into the K best."""
        K = self.score.shape[1]
        new_score = torch.where(ending, log_prob / _length_norm(words + 1, alpha), float("-inf"))
        pool_score = torch.cat([self.score[images], new_score], dim=1)
        keep = pool_score.topk(K, dim=1).indices
        self.score[images] = pool_score.gather(1, keep)
        self.log_prob[images] = torch.cat([self.log_prob[images], log_prob], 1).gather(1, keep)
        self.length[images] = torch.cat([self.length[images], torch.full_like(slot, words)], 1).gather(1, keep)
        self.slot[images] = torch.cat([self.slot[images], slot], 1).gather(1, keep)
        self.count[images] += ending.sum(dim=1)


class _History:
    """What each step chose, per image and live slot: word, parent slot (in the previous
    step's live slots) and the attention behind the word, each (L, B, K, ...)."""

    def __init__(self, L: int, B: int, K: int, P: int, device: torch.device):
        self.words = torch.zeros(L, B, K, dtype=torch.long, device=device)
        self.parents = torch.zeros(L, B, K, dtype=torch.long, device=device)
        self.attention = torch.zeros(L, B, K, P, device=device)
        self.steps = 0  # steps recorded so far: no hypothesis is longer

    def record(self, t: int, images: torch.Tensor, words: torch.Tensor, parents: torch.Tensor,
               attention: torch.Tensor) -> None:
        """images (b,), words and parents (b, K), attention (b, K, P) from the parents' step."""
        self.steps = t + 1
        self.words[t, images] = words
        self.parents[t, images] = parents
        self.attention[t, images] = attention.gather(1, parents.unsqueeze(-1).expand(-1, -1, attention.shape[-1]))

    def read(self, images: torch.Tensor, length: torch.Tensor, slot: torch.Tensor):
        """Hypotheses of `images` (n,) that hold length (n, M) words and sit in live slot
        (n, M) after their last word → words (n, M, L), attention (n, M, L, P); zero past the length."""
        L, P = self.words.shape[0], self.attention.shape[-1]
        words, parents, attention = self.words[:, images], self.parents[:, images], self.attention[:, images]
        out_words = words.new_zeros(*slot.shape, L)
        out_attention = attention.new_zeros(*slot.shape, L, P)
        current = slot.clone()
        for t in reversed(range(self.steps if len(images) else 0)):
            has_word = t < length
            out_words[:, :, t] = torch.where(has_word, words[t].gather(1, current), 0)
            out_attention[:, :, t] = torch.where(
                has_word.unsqueeze(-1), attention[t].gather(1, current.unsqueeze(-1).expand(-1, -1, P)), 0.0)
            current = torch.where(has_word, parents[t].gather(1, current), current)
        return out_words, out_attention


def _collect(options, history: _History, live_length: int, done: _Finished, live_images,
             live_log_prob) -> list[list[DecodedCaption]]:
    """Per image: its finished hypotheses best first, then, for the images in `live_images`,
    the best unfinished ones if too few finished."""
    B, K = done.score.shape
    done_words, done_attention = history.read(torch.arange(B, device=done.score.device), done.length, done.slot)
    live_score = live_log_prob / _length_norm(live_length, options.length_penalty)
    live_order = live_score.argsort(dim=1, descending=True)
    live_words, live_attention = history.read(live_images, torch.full_like(live_order, live_length), live_order)
    live_row = {image: row for row, image in enumerate(live_images.tolist())}
    done_count, done_length = done.count.tolist(), done.length.tolist()
    results = []
    for i in range(B):
        hypotheses = [
            DecodedCaption(done_words[i, k, : done_length[i][k]].tolist(), float(done.log_prob[i, k]),
                           float(done.score[i, k]), done_attention[i, k, : done_length[i][k]].cpu(), True)
            for k in range(min(done_count[i], options.top_n))
        ]
        row = live_row.get(i)
        for k in range(options.top_n - len(hypotheses) if row is not None else 0):
            slot = live_order[row, k]
            if live_log_prob[row, slot].isfinite():
                hypotheses.append(DecodedCaption(live_words[row, k, :live_length].tolist(),
                                                 float(live_log_prob[row, slot]), float(live_score[row, slot]),
                                                 live_attention[row, k, :live_length].cpu(), False))
        results.append(hypotheses)
    return results


def greedy_decode(
    decoder: Decoder, features: torch.Tensor, start_id: int, end_id: int, max_len: int = 20,
    banned_ids: Sequence[int] = (),
) -> list[DecodedCaption]:
    """The most probable word at every step, for a whole batch: features (B, P, D) → B captions."""
    options = DecodingOptions(beam_size=1, max_len=max_len, min_len=0)
    return [hypotheses[0] for hypotheses in beam_search(decoder, features, start_id, end_id, options, banned_ids)]


@dataclass
class SampledCaptions:
    """K sampled captions per image, row b·K + k for sample k of image b; L ≤ max_len + 1.

    tokens (B·K, L): the words, then `<end>`, then `pad_id`; log_probs (B·K, L): log p of each
    sampled token under the sampling distribution, with its autograd graph, 0 where `mask` is
    False; mask (B·K, L): the words and the `<end>`; entropy (B·K, L): that distribution's
    entropy at each masked step (detached, for monitoring), 0 elsewhere; finished (B·K,): whether
    the sample emitted `<end>`."""

    tokens: torch.Tensor
    log_probs: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor
    finished: torch.Tensor


def sample(
    decoder: Decoder, features: torch.Tensor, start_id: int, end_id: int, K: int, max_len: int,
    temperature: float = 1.0, banned_ids: Sequence[int] = (), pad_id: int = 0,
    generator: torch.Generator | None = None,
) -> SampledCaptions:
    """Draw K captions per image from the decoder, all B·K in one batched pass: features (B, P, D).

    Each step draws from softmax(logits / temperature) over the words allowed: `<start>` and
    `banned_ids` (a vocabulary's `<pad>`) are never drawn, as in `beam_search`. `<end>` ends a
    sample. A sample gets at most `max_len` words: a step after its `max_len`-th word can only
    end it, so a token other than `<end>` drawn there is dropped and the sample is unfinished.
    Unlike `beam_search` this keeps the autograd graph (it serves self-critical training), and
    it leaves the decoder's train/eval mode, hence its dropout, as the caller set it. Finished
    rows stay in the batch until every row is done (their later steps are masked out), which keeps
    every step's tensors (B·K, ...) and the graph simple; the loop stops once all rows ended.
    """
    if K < 1 or max_len < 0 or not temperature > 0:
        raise ValueError(f"need K >= 1, max_len >= 0 and temperature > 0, got {K}, {max_len}, {temperature}")
    features, keys, state = decoder.begin(features)
    features, keys = features.repeat_interleave(K, 0), keys.repeat_interleave(K, 0)
    state = tuple(part.repeat_interleave(K, 0) for part in state)
    rows = features.shape[0]
    tokens = torch.full((rows,), start_id, dtype=torch.long, device=features.device)
    running = torch.ones(rows, dtype=torch.bool, device=features.device)
    never = torch.tensor(sorted({start_id, *banned_ids}), device=features.device)
    steps = []  # per step: (token, log p, mask, entropy), each (B·K,)
    for t in range(max_len + 1):
        logits, state, _ = decoder.step(tokens, state, keys, features)
        log_p = (logits.float() / temperature).index_fill(1, never, float("-inf")).log_softmax(dim=-1)  # (B·K, V)
        probs = log_p.detach().exp()
        word = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B·K,)
        real = running & (word == end_id) if t == max_len else running
        entropy = torch.special.entr(probs).sum(dim=-1)  # (B·K,) 0·log 0 counted as 0
        chosen = log_p.gather(1, word[:, None]).squeeze(1)  # (B·K,) with gradients
        steps.append((torch.where(real, word, pad_id), torch.where(real, chosen, 0.0), real,
                      torch.where(real, entropy, 0.0)))
        running = running & (word != end_id)
        tokens = word
        if not bool(running.any()):
            break
    words, log_probs, mask, entropy = (torch.stack(column, dim=1) for column in zip(*steps))
    return SampledCaptions(words, log_probs, mask, entropy, (words == end_id).any(dim=1))
