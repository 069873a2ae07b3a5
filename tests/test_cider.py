"""CiderD (token-id CIDEr-D for rewards) against pycocoevalcap's CiderScorer, the definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocoevalcap.cider.cider_scorer import CiderScorer

from captioner.cider import MAX_TOKEN_ID, CiderD
from captioner.vocab import Vocabulary

PAD, START, END = 0, 1, 2


def text(tokens) -> str:
    return " ".join(f"w{t}" for t in tokens)


def oracle(references, candidates) -> np.ndarray:
    """pycocoevalcap's scores of candidates[i] against references[i], one candidate per image of
    the corpus: its df and N then come from exactly the corpus CiderD was built from."""
    scorer = CiderScorer(n=4, sigma=6.0)
    for refs, candidate in zip(references, candidates):
        scorer += (text(candidate), [text(r) for r in refs])
    _, scores = scorer.compute_score()
    return np.asarray(scores)


def random_caption(rng, words: int, max_len: int) -> list[int]:
    # few words, so that n-grams repeat inside a caption and across captions
    return (rng.integers(0, words, rng.integers(0, max_len + 1)) + 4).tolist()


def random_corpus(rng, images: int, words: int = 5, max_len: int = 9):
    return [[random_caption(rng, words, max_len) for _ in range(rng.integers(1, 6))] for _ in range(images)]


@pytest.mark.parametrize("seed", range(40))
def test_equals_pycocoevalcap_given_the_same_document_frequencies(seed):
    rng = np.random.default_rng(seed)
    corpus = random_corpus(rng, images=int(rng.integers(1, 25)), words=int(rng.integers(2, 8)))
    cider = CiderD(corpus)
    for _ in range(3):  # several candidates per image, each round one per image
        # words the corpus never saw (df 0) too, and candidates longer than every reference
        candidates = [random_caption(rng, 9, int(rng.choice([0, 4, 12, 25]))) for _ in corpus]
        expected = oracle(corpus, candidates)
        np.testing.assert_allclose(cider.scores(np.arange(len(corpus)), candidates), expected, rtol=0, atol=1e-6)


def test_edge_cases_equal_pycocoevalcap():
    corpus = [[[4, 4, 4, 4]], [[], [5]], [[4, 5, 4, 5, 4, 5], [6]], [[7, 8, 9, 10, 11]]]
    for candidates in ([[], [], [], []],  # empty candidates
                       [[4, 4, 4, 4, 4, 4, 4, 4], [5], [4, 5, 4, 5], [7, 8, 9, 10, 11]],  # repeats, exact match
                       [[4], [12, 12], [6, 6, 6], list(range(4, 40))]):  # unseen words, far too long
        np.testing.assert_allclose(CiderD(corpus).scores(np.arange(4), candidates), oracle(corpus, candidates),
                                   rtol=0, atol=1e-6)


def test_a_batch_in_any_order_with_repeated_images_scores_each_candidate_alone():
    rng = np.random.default_rng(7)
    corpus = random_corpus(rng, images=12)
    cider = CiderD(corpus)
    images = np.repeat(rng.permutation(12)[:5], 4)  # B = 5 images × K = 4 samples, unsorted
    candidates = [random_caption(rng, 6, 10) for _ in images]
    batched = cider.scores(images, candidates)
    alone = [cider.scores([i], [c])[0] for i, c in zip(images, candidates)]
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-12)


def test_document_frequencies_come_from_the_training_corpus_not_from_the_batch():
    rng = np.random.default_rng(3)
    corpus = random_corpus(rng, images=20)
    candidates = [random_caption(rng, 5, 9) for _ in corpus]
    batch = np.array([2, 5, 11])
    ours = CiderD(corpus).scores(batch, [candidates[i] for i in batch])
    # the same as pycocoevalcap over the whole corpus (df and N of all 20 images) ...
    np.testing.assert_allclose(ours, oracle(corpus, candidates)[batch], rtol=0, atol=1e-6)
    # ... and not what pycocoevalcap gives on the batch alone (df and N of 3 images)
    batch_only = oracle([corpus[i] for i in batch], [candidates[i] for i in batch])
    assert np.abs(ours - batch_only).max() > 1e-3


def test_rows_are_read_up_to_end_without_start_and_pad():
    vocab = Vocabulary([f"x{i}" for i in range(20)])
    words = [[4, 5, 6], [7, 7, 8, 9], [5]]
    encoded = [[[vocab.start_id, *w, vocab.end_id] for w in words]]  # one image, Vocabulary.encode's form
    cider = CiderD.from_vocab(encoded, vocab)
    assert cider.scores([0], [[4, 5, 6]])[0] == pytest.approx(CiderD([words]).scores([0], [[4, 5, 6]])[0])
    sampled = torch.tensor([[4, 5, 6, vocab.end_id, vocab.pad_id, vocab.pad_id],
                            [7, 7, 8, 9, vocab.end_id, 4],  # words after <end> are not words
                            [vocab.end_id, 4, 5, 6, 7, 8],  # empty
                            [4, 5, 6, 7, 8, 9]])  # never ended: every token is a word
    expected = CiderD([words]).scores([0] * 4, [[4, 5, 6], [7, 7, 8, 9], [], [4, 5, 6, 7, 8, 9]])
    np.testing.assert_allclose(cider.scores(torch.zeros(4, dtype=torch.long), sampled), expected, atol=1e-12)


def test_large_token_ids_pack_without_collisions_and_too_large_ones_are_refused():
    big = MAX_TOKEN_ID
    corpus = [[[big, big - 1, 4, big]], [[big - 1, big, 4]], [[4, big, big - 1]]]
    candidates = [[big - 1, big, 4, big], [4, big, big - 1], [big, big - 1, 4]]
    np.testing.assert_allclose(CiderD(corpus).scores(np.arange(3), candidates), oracle(corpus, candidates),
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="token ids"):
        CiderD(corpus).scores([0], [[MAX_TOKEN_ID + 1]])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one reference"):
        CiderD([[[4, 5]], []])
    cider = CiderD([[[4, 5]]])
    with pytest.raises(IndexError):
        cider.scores([1], [[4]])
    with pytest.raises(ValueError, match="image indices"):
        cider.scores([0, 0], [[4]])
