"""Batched beam search: known best sequences, beam 1 == greedy, batched == one by one, limits."""

import itertools
import math

import pytest
import torch

from captioner.config import EncoderConfig, ModelConfig
from captioner.decoding import DecodingOptions, beam_search, greedy_decode, sample
from captioner.model import Decoder

START, END, A, B, C = 1, 2, 4, 5, 6
V, P = 7, 8


class BigramDecoder(torch.nn.Module):
    """A decoder with hand-set weights: p(y_t | y_{t-1}) from a fixed table, and attention
    one-hot on cell y_{t-1} mod P, so every step's attention says which word it followed."""

    def __init__(self, table: dict[int, dict[int, float]]):
        super().__init__()
        probs = torch.full((V, V), 1e-9)
        for previous, row in table.items():
            for word, p in row.items():
                probs[previous, word] = p
        self.register_buffer("log_table", (probs / probs.sum(1, keepdim=True)).log())

    def begin(self, features):
        h = features.new_zeros(features.shape[0], 1)
        return features, features, (h, h)

    def step(self, tokens, state, keys, features):
        return self.log_table[tokens], state, torch.nn.functional.one_hot(tokens % P, P).float()


TRAP = {  # greedy takes A (0.6) and then never finds a good ending; "B <end>" has p = 0.38
    START: {A: 0.6, B: 0.4},
    A: {A: 0.36, C: 0.34, END: 0.3},
    C: {A: 0.36, C: 0.34, END: 0.3},
    B: {END: 0.95, A: 0.05},
}


def exhaustive_best(table, max_len):
    """The most probable finished sequence of at most max_len words, by brute force."""
    log_table = BigramDecoder(table).log_table
    best, best_lp = None, -math.inf
    for n in range(max_len + 1):
        for words in itertools.product(range(3, V), repeat=n):
            sequence = [START, *words, END]
            lp = sum(float(log_table[a, b]) for a, b in zip(sequence, sequence[1:]))
            if lp > best_lp:
                best, best_lp = list(words), lp
    return best, best_lp


def decode(decoder, batch=1, **options):
    return beam_search(decoder, torch.zeros(batch, P, 3), START, END, DecodingOptions(**options))


def test_beam_search_finds_the_known_best_sequence_that_greedy_misses():
    decoder = BigramDecoder(TRAP)
    best, best_lp = exhaustive_best(TRAP, max_len=4)
    assert best == [B]
    (beam,) = decode(decoder, beam_size=3, max_len=4)
    assert beam[0].tokens == best and beam[0].finished
    assert beam[0].log_prob == pytest.approx(best_lp, abs=1e-5)
    (greedy,) = greedy_decode(decoder, torch.zeros(1, P, 3), START, END, max_len=4)
    assert greedy.tokens[0] == A and greedy.log_prob < best_lp


def test_attention_rows_follow_the_chosen_hypothesis_through_reordering():
    (beam,) = decode(BigramDecoder(TRAP), beam_size=3, max_len=6, top_n=3)
    for hypothesis in beam:
        previous = [START, *hypothesis.tokens[:-1]]
        assert hypothesis.attention.shape == (len(hypothesis.tokens), P)
        assert hypothesis.attention.argmax(dim=1).tolist() == [w % P for w in previous]


def test_top_n_is_sorted_distinct_and_scores_follow_the_length_penalty():
    (hypotheses,) = decode(BigramDecoder(TRAP), beam_size=4, max_len=6, top_n=4, length_penalty=0.8)
    assert len(hypotheses) == 4
    assert len({tuple(h.tokens) for h in hypotheses}) == 4
    scores = [h.score for h in hypotheses]
    assert scores == sorted(scores, reverse=True)
    for h in hypotheses:  # n counts the words and the <end> of a finished caption
        n = len(h.tokens) + h.finished
        assert h.score == pytest.approx(h.log_prob / ((5 + n) / 6) ** 0.8, rel=1e-5)


def test_no_end_within_max_len_returns_the_best_unfinished_hypothesis():
    never_ends = {START: {A: 0.7, B: 0.3}, A: {A: 0.5, B: 0.5}, B: {A: 0.9, B: 0.1}}
    for beam_size in (1, 3):
        (hypotheses,) = decode(BigramDecoder(never_ends), beam_size=beam_size, max_len=5, top_n=1)
        best = hypotheses[0]
        assert not best.finished and len(best.tokens) == 5
        assert best.tokens == [A, B, A, B, A]  # 0.7·0.5·0.9·0.5·0.9 beats every other 5-word path
        assert best.attention.shape == (5, P)


def test_min_len_is_respected():
    ends_at_once = {START: {END: 0.9, A: 0.1}, A: {END: 0.5, B: 0.5}, B: {END: 0.9, A: 0.1}}
    (short,) = decode(BigramDecoder(ends_at_once), beam_size=2, max_len=6, min_len=0)
    assert short[0].tokens == []
    for min_len in (1, 2, 3):
        (hypotheses,) = decode(BigramDecoder(ends_at_once), beam_size=2, max_len=6, min_len=min_len, top_n=2)
        assert all(len(h.tokens) >= min_len and h.finished for h in hypotheses)


class CountdownDecoder(torch.nn.Module):
    """Image i writes features[i, 0, 0] words (A more likely than B) and then <end>; records
    how many hypotheses each step was given."""

    def __init__(self):
        super().__init__()
        self.rows_per_step = []

    def begin(self, features):
        return features, features, (features[:, 0, :1].clone(),)

    def step(self, tokens, state, keys, features):
        self.rows_per_step.append(len(tokens))
        (left,) = state
        words = torch.log(torch.tensor([1e-6] * 4 + [0.9, 0.1, 1e-6]))
        ending = torch.log(torch.tensor([1e-6, 1e-6, 0.99] + [1e-6] * 4))
        logits = torch.where(left > 0, words, ending)
        return logits, (left - 1,), torch.ones(len(tokens), keys.shape[1]) / keys.shape[1]


def test_done_images_leave_the_batch():
    lengths = [3, 1, 5, 2]
    features = torch.zeros(len(lengths), P, 3)
    features[:, 0, 0] = torch.tensor(lengths, dtype=torch.float)
    decoder = CountdownDecoder()
    K = 2
    results = beam_search(decoder, features, START, END, DecodingOptions(beam_size=K, max_len=10, top_n=K))
    assert [[len(h.tokens) for h in hypotheses] for hypotheses in results] == [[n, n] for n in lengths]
    assert results[0][0].tokens == [A, A, A] and results[0][1].tokens.count(B) == 1  # the runner-up: one B, ties
    assert all(h.finished and h.attention.shape == (len(h.tokens), P) for r in results for h in r)
    # step t advances the K hypotheses of every image whose caption is not yet over
    assert decoder.rows_per_step == [K * sum(n >= t for n in lengths) for t in range(max(lengths) + 1)]


def tiny_decoder(seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(encoder=EncoderConfig(backbone="tiny", weights="none"), embed_dim=16, attention_dim=12,
                         decoder_dim=24, dropout=0.0)
    decoder = Decoder(vocab_size=30, feature_dim=10, config=config).eval()
    with torch.no_grad():  # sharper than the initial near-uniform output, so searches diverge
        decoder.out.weight.mul_(8)
    return decoder


@pytest.mark.parametrize("beam_size", [1, 3, 5])
def test_batched_equals_one_image_at_a_time(beam_size):
    decoder = tiny_decoder()
    features = torch.randn(6, 9, 10)
    options = DecodingOptions(beam_size=beam_size, max_len=12, top_n=beam_size, length_penalty=0.5)
    batched = beam_search(decoder, features, START, END, options)
    for i in range(6):
        (alone,) = beam_search(decoder, features[i : i + 1], START, END, options)
        assert [h.tokens for h in alone] == [h.tokens for h in batched[i]]
        for a, b in zip(alone, batched[i]):
            assert a.score == pytest.approx(b.score, abs=1e-4)
            torch.testing.assert_close(a.attention, b.attention, atol=1e-5, rtol=1e-4)


def test_beam_one_is_greedy_on_a_real_decoder():
    decoder = tiny_decoder(seed=1)
    features = torch.randn(8, 9, 10)
    greedy = greedy_decode(decoder, features, START, END, max_len=10)
    beam = beam_search(decoder, features, START, END, DecodingOptions(beam_size=1, max_len=10, min_len=0))
    # the step-by-step argmax, written out plainly
    features_n, keys, state = decoder.begin(features)
    tokens = torch.full((8,), START)
    expected = [[] for _ in range(8)]
    running = [True] * 8
    for _ in range(10):
        logits, state, _ = decoder.step(tokens, state, keys, features_n)
        tokens = logits.argmax(-1)
        for i, word in enumerate(tokens.tolist()):
            if running[i]:
                if word == END:
                    running[i] = False
                else:
                    expected[i].append(word)
    assert [g.tokens for g in greedy] == [b[0].tokens for b in beam] == expected
    assert [g.log_prob for g in greedy] == pytest.approx([b[0].log_prob for b in beam])


def test_invalid_options_are_rejected_with_a_message():
    with pytest.raises(ValueError, match="beam size"):
        DecodingOptions(beam_size=0)
    with pytest.raises(ValueError, match="min_len"):
        DecodingOptions(min_len=5, max_len=3)
    with pytest.raises(ValueError, match="top_n"):
        DecodingOptions(beam_size=2, top_n=3)



def random_table(generator: torch.Generator) -> dict[int, dict[int, float]]:
    """A random bigram table over the words A, B, C and <end>, with <end> rare enough that
    hypotheses reach max_len and common enough that some end exactly there."""
    table = {}
    for previous in (START, A, B, C):
        weights = torch.rand(4, generator=generator) + 0.05
        weights[-1] *= 0.5
        weights /= weights.sum()
        table[previous] = dict(zip((A, B, C, END), weights.tolist()))
    return table


@pytest.mark.parametrize("beam_size", [2, 3, 4])
def test_top_n_never_lists_a_token_sequence_twice(beam_size):
    # The bug: at max_len, a hypothesis that ended at the last step was returned both as
    # finished and, still live, as unfinished with the same words.
    generator = torch.Generator().manual_seed(beam_size)
    for _ in range(60):
        decoder = BigramDecoder(random_table(generator))
        for max_len in (1, 2, 3, 4):
            (hypotheses,) = decode(decoder, beam_size=beam_size, max_len=max_len, top_n=beam_size, min_len=0)
            sequences = [tuple(h.tokens) for h in hypotheses]
            assert len(set(sequences)) == len(sequences), sequences


def test_a_caption_that_ends_at_max_len_is_listed_once_as_finished():
    # "A <end>" (p 0.5·0.6) ends exactly at max_len 1; "B" cannot end, so top 2 are A<end> and B…
    table = {START: {A: 0.5, B: 0.5}, A: {END: 0.6, A: 0.4}, B: {B: 1.0}}
    (hypotheses,) = decode(BigramDecoder(table), beam_size=2, max_len=1, top_n=2, min_len=0)
    assert [(h.tokens, h.finished) for h in hypotheses] == [([A], True), ([B], False)]
    assert hypotheses[0].log_prob == pytest.approx(math.log(0.5 * 0.6), abs=1e-5)


PAD = 0


def test_pad_and_start_are_never_emitted():
    # <pad> and <start> are the most probable next words everywhere: the search must still
    # write only real words, one attention row each, and end only with <end>.
    table = {START: {PAD: 0.5, START: 0.3, A: 0.2}, PAD: {PAD: 0.9, END: 0.1},
             A: {START: 0.6, B: 0.3, END: 0.1}, B: {PAD: 0.5, END: 0.5}}
    for beam_size in (1, 3):
        (hypotheses,) = beam_search(BigramDecoder(table), torch.zeros(1, P, 3), START, END,
                                    DecodingOptions(beam_size=beam_size, max_len=6, top_n=beam_size),
                                    banned_ids=(PAD,))
        for h in hypotheses:
            assert PAD not in h.tokens and START not in h.tokens
            assert h.attention.shape == (len(h.tokens), P)
        assert hypotheses[0].tokens == [A, B] and hypotheses[0].finished  # the best real-word caption


# ------------------------------------------------------------------ sampling (self-critical training)

def sample_outcomes(table, max_len):
    """Every outcome of sampling with at most max_len words, by enumeration: (words, finished) → p.
    A sample still running after max_len words is unfinished, whatever its next token would be."""
    probs = BigramDecoder(table).log_table.exp()
    outcomes = {}

    def walk(words, previous, p):
        p_end = float(probs[previous, END])
        outcomes[(tuple(words), True)] = p * p_end
        if len(words) == max_len:
            outcomes[(tuple(words), False)] = p * (1 - p_end)
            return
        for word in range(3, V):
            if float(probs[previous, word]) > 1e-6:
                walk([*words, word], word, p * float(probs[previous, word]))

    walk([], START, 1.0)
    return outcomes


def sampled_words(samples):
    """(words, finished) of each row: the masked tokens without the <end>."""
    return [(tuple(t for t, m in zip(row, keep) if m and t != END), bool(done))
            for row, keep, done in zip(samples.tokens.tolist(), samples.mask.tolist(), samples.finished.tolist())]


def test_sampled_frequencies_match_the_exact_probabilities():
    table = {START: {A: 0.5, B: 0.3, END: 0.2}, A: {A: 0.2, B: 0.4, END: 0.4},
             B: {END: 0.7, C: 0.3}, C: {A: 0.5, END: 0.5}}
    exact = sample_outcomes(table, max_len=2)
    assert sum(exact.values()) == pytest.approx(1.0, abs=1e-5)
    images, K = 4, 5000
    generator = torch.Generator().manual_seed(0)
    samples = sample(BigramDecoder(table), torch.zeros(images, P, 3), START, END, K=K, max_len=2, generator=generator)
    counts = {}
    for outcome in sampled_words(samples):
        counts[outcome] = counts.get(outcome, 0) + 1
    assert set(counts) <= set(exact)
    n = images * K
    for outcome, p in exact.items():
        # each frequency within 5 binomial standard errors (a fixed seed, so not flaky)
        assert abs(counts.get(outcome, 0) / n - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-9, outcome
    # a finished sample's log-probabilities add up to its probability under the model
    for row, (words, finished) in enumerate(sampled_words(samples)[:50]):
        if finished:
            assert float(samples.log_probs[row].sum()) == pytest.approx(math.log(exact[(words, True)]), abs=1e-4)


def test_sample_masks_padding_and_unfinished_rows():
    table = {START: {A: 0.5, END: 0.5}, A: {A: 0.5, END: 0.5}}
    samples = sample(BigramDecoder(table), torch.zeros(3, P, 3), START, END, K=50, max_len=3, pad_id=0,
                     generator=torch.Generator().manual_seed(1))
    assert samples.tokens.shape == samples.mask.shape == samples.log_probs.shape == (150, 4)
    for row, keep, log_p, done in zip(samples.tokens.tolist(), samples.mask.tolist(), samples.log_probs.tolist(),
                                      samples.finished.tolist()):
        length = sum(keep)
        assert keep == [True] * length + [False] * (4 - length)  # the real tokens come first
        assert row[length:] == [0] * (4 - length) and all(lp == 0.0 for lp in log_p[length:])
        assert done == (row[length - 1] == END) and (done or row[:length] == [A, A, A])
        assert all(lp == pytest.approx(math.log(0.5), abs=1e-4) for lp in log_p[:length])
    assert not samples.finished.all() and samples.finished.any()  # both kinds drawn


def test_sample_never_emits_start_or_banned_tokens_and_renormalises():
    table = {START: {PAD: 0.5, START: 0.3, A: 0.1, B: 0.1}, A: {PAD: 0.6, END: 0.2, B: 0.2},
             B: {START: 0.5, END: 0.25, A: 0.25}}
    samples = sample(BigramDecoder(table), torch.zeros(2, P, 3), START, END, K=500, max_len=6,
                     banned_ids=(PAD,), pad_id=PAD, generator=torch.Generator().manual_seed(2))
    real = samples.tokens[samples.mask]
    assert not ((real == PAD) | (real == START)).any()
    first = samples.tokens[:, 0]
    assert set(first.tolist()) <= {A, B}  # p(A) = p(B) = 0.5 once <pad> and <start> are taken away
    assert samples.log_probs[:, 0].tolist() == pytest.approx([math.log(0.5)] * len(first), abs=1e-4)


def test_sample_rows_follow_their_image():
    lengths = [3, 1, 5, 2]
    features = torch.zeros(len(lengths), P, 3)
    features[:, 0, 0] = torch.tensor(lengths, dtype=torch.float)
    samples = sample(CountdownDecoder(), features, START, END, K=6, max_len=8,
                     generator=torch.Generator().manual_seed(3))
    words = [len(w) for w, _ in sampled_words(samples)]
    assert words == [n for n in lengths for _ in range(6)]  # row b·K + k is sample k of image b
    assert samples.finished.all()


def test_near_zero_temperature_sampling_is_greedy_and_keeps_the_graph():
    decoder = tiny_decoder(seed=1).train()  # dropout 0, so train mode is deterministic
    features = torch.randn(8, 9, 10)
    greedy = greedy_decode(decoder, features, START, END, max_len=10, banned_ids=(PAD,))
    samples = sample(decoder, features, START, END, K=2, max_len=10, temperature=1e-4, banned_ids=(PAD,))
    assert decoder.training  # the caller's mode is left alone
    words = sampled_words(samples)
    assert [w for w, _ in words] == [tuple(g.tokens) for g in greedy for _ in range(2)]
    assert [f for _, f in words] == [g.finished for g in greedy for _ in range(2)]
    # temperature 1: the log-probabilities carry gradients back to the decoder's weights
    samples = sample(decoder, features, START, END, K=2, max_len=10, generator=torch.Generator().manual_seed(4))
    samples.log_probs.sum().backward()
    assert decoder.out.weight.grad is not None and decoder.out.weight.grad.abs().sum() > 0
