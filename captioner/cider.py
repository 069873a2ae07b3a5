"""CIDEr-D over token ids, for rewards: many candidates scored at once against stored references.

The definition is pycocoevalcap's `CiderScorer` (what `captioner.coco_eval` reports as CIDEr):
for n = 1..4, a caption's n-grams become a tf-idf vector, tf · (log N − log max(1, df)); the
candidate's vector is clipped to each reference's (min(v_cand, v_ref) in the dot product) and
divided by both norms; a Gaussian penalty exp(−δ²/2σ²), σ = 6, compares lengths, where a
caption's "length" is, as in pycocoevalcap, its number of bigrams (words − 1, at least 0); the
similarities are averaged over the references, then over n, and multiplied by 10.

One difference of use, not of definition: `CiderScorer` takes the document frequencies df and
N from the references of the captions it is scoring, so a reward would depend on which images
share the batch. Here df and N come once from a fixed corpus, the training references, as
Rennie et al. (2017) do for self-critical training; given the same df and N, the scores equal
`CiderScorer`'s (tests/test_cider.py checks it to 1e-6).

What a caption is. A caption is its words: the tokens before its first `end_id` (the `<end>`
and everything after it, padding included, are not words), with `drop_ids` (`<start>`,
`<pad>`) removed. References encoded by `Vocabulary.encode` (`<start> w1 .. wn <end>`) and
sampled rows padded after their `<end>` can therefore be passed as they are. `<unk>` counts as
a word, as it is in the encoded references.

How it is fast. n-grams of token ids are packed into int64 keys (15 bits per token, the order
n in the top bits), so counting is a sort of a key matrix, and the training n-grams get dense
ids. The references' tf-idf entries, norms and lengths are computed once, at construction;
scoring gathers the entries of the batch's images and matches the candidates' n-grams against
them with one `searchsorted`. No Python loop runs per caption or per n-gram.

Letters: N images of the corpus, M candidates, L tokens, G distinct corpus n-grams.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

TOKEN_BITS = 15  # 4 tokens · 15 bits + the order in bits 60-61 fit a signed int64
MAX_TOKEN_ID = 2**TOKEN_BITS - 1
_ORDER_SHIFT = 60
_NONE = np.iinfo(np.int64).max  # sorts after every real key; marks "no n-gram here"
_CHUNK = 20_000  # references counted at a time: bounds the (chunk, 4·L) key matrix


class CiderD:
    """CIDEr-D of candidates against a fixed corpus of references (the training captions).

    `references[i]` holds the reference captions of image i (each a sequence of token ids, read
    as the module docstring says); every image needs at least one. df counts, for each n-gram,
    the images whose references contain it, and N is the number of images, both fixed here.
    """

    def __init__(self, references: Sequence[Sequence[Sequence[int]]], end_id: int | None = None,
                 drop_ids: Sequence[int] = (), n: int = 4, sigma: float = 6.0):
        if not 1 <= n <= 4:
            raise ValueError(f"CIDEr-D n-gram order must be between 1 and 4, got {n}")
        if not references or any(len(refs) == 0 for refs in references):
            raise ValueError("CiderD needs at least one image, and at least one reference per image")
        self.n, self.sigma = n, sigma
        self.end_id, self.drop_ids = end_id, np.array(sorted(set(drop_ids)), dtype=np.int64)
        counts = np.array([len(refs) for refs in references])
        self.ref_start = np.concatenate([[0], np.cumsum(counts)])  # image i: refs ref_start[i]..[i+1]
        flat = [ref for refs in references for ref in refs]
        ref_rows, keys, tf, ref_lengths = _count_corpus(flat, self)  # per (ref, n-gram)
        self.ref_length = _bigram_count(ref_lengths)  # (R,) pycocoevalcap's "length"

        # dense n-gram ids, numbered in key order, so (ref, gram id) keeps the (ref, key) order
        self.grams, gram_id = np.unique(keys, return_inverse=True)  # (G,), (E,)
        G = len(self.grams)
        df = _document_frequencies(np.repeat(np.arange(len(references)), counts)[ref_rows], gram_id, G)
        self.log_n = np.log(float(len(references)))
        # the same expression pycocoevalcap evaluates, so that equal inputs give equal floats
        self.idf = self.log_n - np.log(np.maximum(1.0, df.astype(np.float64)))  # (G,)
        self.gram_order = (self.grams >> _ORDER_SHIFT).astype(np.int64)  # (G,) n − 1

        # per reference its entries, sorted by (ref, gram id) as counted, and its norm per order
        self.entry_key = ref_rows * G + gram_id  # (E,) ascending
        self.entry_tf = tf.astype(np.float32)  # small whole numbers: exact, half the memory
        weights = tf * self.idf[gram_id]
        self.ref_norm = _norms(ref_rows, self.gram_order[gram_id], weights, len(flat), n)  # (R, n)
        # where each reference's entries start in entry_key: (R + 1,)
        self.entry_start = np.searchsorted(self.entry_key, np.arange(len(flat) + 1) * G)

    @classmethod
    def from_vocab(cls, references, vocab, **options) -> "CiderD":
        """References encoded by `vocab` (with or without `<start>`/`<end>`), read up to `<end>`,
        without `<start>` and `<pad>`."""
        return cls(references, end_id=vocab.end_id, drop_ids=(vocab.start_id, vocab.pad_id), **options)

    def __len__(self) -> int:
        return len(self.ref_start) - 1

    def scores(self, image_indices, candidates) -> np.ndarray:
        """CIDEr-D of each candidate against the references of its image: image_indices (M,)
        positions in `references`; candidates a (M, L) int tensor or array (rows read up to their
        first `end_id`) or M token-id sequences → (M,) float64."""
        images = np.asarray(torch.as_tensor(image_indices).cpu(), dtype=np.int64).reshape(-1)
        tokens, lengths = self.words(candidates)
        if len(images) != len(tokens):
            raise ValueError(f"{len(images)} image indices for {len(tokens)} candidates")
        if len(images) and not (0 <= images.min() and images.max() < len(self)):
            raise IndexError(f"image indices must be in [0, {len(self)}), got {images.min()}..{images.max()}")
        rows, keys, tf = _ngram_counts(tokens, lengths, self.n)  # (E,) each, sorted by row
        # searching the distinct keys in ascending order: numpy's searchsorted is far faster
        # with sorted needles, which walk the corpus' n-grams once instead of at random
        distinct, which = np.unique(keys, return_inverse=True)
        slot = np.minimum(np.searchsorted(self.grams, distinct), len(self.grams) - 1)[which]
        gram_id = np.where(self.grams[slot] == keys, slot, -1)  # −1: not in the corpus, df 0
        idf = np.where(gram_id >= 0, self.idf[slot], self.log_n)
        weights = tf * idf  # (E,) the candidates' tf-idf
        order = (keys >> _ORDER_SHIFT).astype(np.int64)
        norm = _norms(rows, order, weights, len(tokens), self.n)  # (M, n)
        similarity = self._similarities(images, rows, gram_id, order, weights, norm, _bigram_count(lengths))
        return similarity

    def words(self, candidates) -> tuple[np.ndarray, np.ndarray]:
        """Candidates → (words (M, L) int64, left-aligned, zero after each row's length; lengths (M,))."""
        if isinstance(candidates, (torch.Tensor, np.ndarray)):
            matrix = np.asarray(torch.as_tensor(candidates).cpu(), dtype=np.int64)
            if matrix.ndim != 2:
                raise ValueError(f"candidates must be (M, L) token ids, got shape {matrix.shape}")
            lengths = np.full(len(matrix), matrix.shape[1])
        else:
            matrix, lengths = _padded([list(c) for c in candidates])
        return self._compact(matrix, lengths)

    def _compact(self, matrix: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M, L) rows holding lengths (M,) tokens → the words of each row moved to its front,
        and their count."""
        keep = np.arange(matrix.shape[1]) < lengths[:, None]
        if self.end_id is not None:
            keep &= np.cumsum(matrix == self.end_id, axis=1) == 0  # before the first <end>
        if len(self.drop_ids):
            keep &= ~np.isin(matrix, self.drop_ids)
        if keep.all():
            words = matrix
        else:
            # a stable sort of "dropped" flags moves the kept tokens, in order, to the front
            words = np.take_along_axis(matrix, np.argsort(~keep, axis=1, kind="stable"), axis=1)
        lengths = keep.sum(axis=1)
        words = np.where(np.arange(matrix.shape[1]) < lengths[:, None], words, 0)
        if words.size and (words.min() < 0 or words.max() > MAX_TOKEN_ID):
            raise ValueError(f"token ids must be in [0, {MAX_TOKEN_ID}] for CiderD's n-gram keys")
        return words, lengths

    def _similarities(self, images, rows, gram_id, order, weights, norm, length) -> np.ndarray:
        """Clipped cosine similarities with every reference of each candidate's image, length
        penalty, mean over references and orders, ×10 → (M,)."""
        M = len(images)
        ref_count = self.ref_start[images + 1] - self.ref_start[images]  # (M,)
        pair_start = np.concatenate([[0], np.cumsum(ref_count)])  # candidate m: pairs pair_start[m]..
        pair_ref = _ranges(self.ref_start[images], ref_count)  # (Q,) the reference of each pair
        pair_candidate = np.repeat(np.arange(M), ref_count)  # (Q,)

        # each candidate n-gram that the corpus knows, once per reference of its image
        known = gram_id >= 0
        e_rows, e_gram, e_order, e_weight = rows[known], gram_id[known], order[known], weights[known]
        e_pairs = ref_count[e_rows]
        e_pair = _ranges(pair_start[e_rows], e_pairs)  # (X,)
        e_gram, e_order, e_weight = (np.repeat(column, e_pairs) for column in (e_gram, e_order, e_weight))
        lookup = pair_ref[e_pair].astype(np.int64) * len(self.grams) + e_gram
        ref_weight = self._reference_weights(np.unique(images), lookup, e_gram)  # (X,), 0 where absent

        dot = np.bincount(e_pair * self.n + e_order, weights=np.minimum(e_weight, ref_weight) * ref_weight,
                          minlength=len(pair_ref) * self.n).astype(np.float64).reshape(-1, self.n)  # (Q, n)
        denominator = norm[pair_candidate] * self.ref_norm[pair_ref]
        # pycocoevalcap divides only when both norms are non-zero (the dot is then 0 anyway)
        cosine = np.divide(dot, denominator, out=dot.copy(), where=denominator != 0)
        delta = (length[pair_candidate] - self.ref_length[pair_ref]).astype(np.float64)
        cosine *= np.e ** (-(delta**2) / (2 * self.sigma**2))[:, None]
        per_order = np.add.reduceat(cosine, pair_start[:-1], axis=0) if len(cosine) else np.zeros((M, self.n))
        return per_order.mean(axis=1) / ref_count * 10.0

    def _reference_weights(self, images, lookup, grams) -> np.ndarray:
        """tf-idf of the reference n-grams named by lookup = ref · G + gram (X,), 0 where the
        reference lacks it. Only the batch's images' entries are searched: a small sorted slice."""
        first, last = self.ref_start[images], self.ref_start[images + 1]
        starts, stops = self.entry_start[first], self.entry_start[last]
        entries = _ranges(starts, stops - starts)  # ascending, so entry_key[entries] stays sorted
        keys, tf = self.entry_key[entries], self.entry_tf[entries]
        if len(keys) == 0:
            return np.zeros(len(lookup))
        slot = np.minimum(np.searchsorted(keys, lookup), len(keys) - 1)
        return np.where(keys[slot] == lookup, tf[slot] * self.idf[grams], 0.0)


def _count_corpus(references: list, cider: CiderD):
    """All references, a chunk at a time → (ref row (E,), key (E,), tf (E,) float64, word counts (R,))."""
    parts, lengths = [], []
    for start in range(0, len(references), _CHUNK):
        words, length = cider.words(references[start: start + _CHUNK])
        rows, keys, tf = _ngram_counts(words, length, cider.n)
        parts.append((rows + start, keys, tf))
        lengths.append(length)
    rows, keys, tf = (np.concatenate(column) for column in zip(*parts))
    return rows, keys, tf, np.concatenate(lengths)


def _document_frequencies(image: np.ndarray, gram_id: np.ndarray, G: int) -> np.ndarray:
    """For each n-gram, how many images hold it in one of their references: the image and gram
    id of each (ref, n-gram) entry (E,) → df (G,). A sort, then the changes: numpy's hash-based
    `unique` was many times slower on these sizes."""
    pairs = np.sort(image * G + gram_id)
    first = np.ones(len(pairs), dtype=bool)
    first[1:] = pairs[1:] != pairs[:-1]
    return np.bincount(pairs[first] % G, minlength=G)


def _ngram_counts(words: np.ndarray, lengths: np.ndarray, n_max: int):
    """words (M, L), lengths (M,) → each row's distinct n-grams, n = 1..n_max: row (E,), packed
    key (E,), count (E,) float64, sorted by (row, key)."""
    M, L = words.shape
    widths = [max(L - n + 1, 0) for n in range(1, n_max + 1)]
    keys = np.empty((M, sum(widths)), dtype=np.int64)  # (M, W): every n-gram of a row, one column each
    column = 0
    for n, width in enumerate(widths, start=1):
        block = keys[:, column: column + width]
        block[:] = (n - 1) << _ORDER_SHIFT
        for i in range(n):  # token i of the n-gram at position j is words[:, j + i]
            block |= words[:, i: i + width] << (TOKEN_BITS * (n - 1 - i))
        block[np.arange(width) + n > lengths[:, None]] = _NONE  # runs past the caption's end
        column += width
    keys.sort(axis=1)  # equal n-grams of a row are now adjacent, the _NONEs last
    flat, W = keys.ravel(), keys.shape[1]
    new = np.ones(len(flat), dtype=bool)
    new[1:] = flat[1:] != flat[:-1]
    new[::max(W, 1)] = True  # a row's first column starts a run even when it equals the row before's last
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(flat)))
    real = flat[starts] != _NONE
    starts = starts[real]
    return starts // max(W, 1), flat[starts], counts[real].astype(np.float64)


def _norms(rows, order, weights, count: int, n: int) -> np.ndarray:
    """√Σ w² per (row, order): rows, order (n − 1) and weights (E,) → (count, n)."""
    # (an empty bincount is int64, whatever its weights)
    squares = np.bincount(rows * n + order, weights=weights**2, minlength=count * n).astype(np.float64)
    return np.sqrt(squares).reshape(count, n)


def _bigram_count(lengths: np.ndarray) -> np.ndarray:
    """pycocoevalcap's caption "length": its counts2vec adds up the n-grams of index 1, the bigrams."""
    return np.maximum(np.asarray(lengths, dtype=np.int64) - 1, 0)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated aranges: [starts[0], .., starts[0] + counts[0]), [starts[1], ..), ... (Σ counts,)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(np.asarray(starts, dtype=np.int64), counts) + (np.arange(total) - offsets)


def _padded(sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Token-id lists → (M, longest) int64, zero-padded, and their lengths (M,)."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    matrix = np.zeros((len(sequences), int(lengths.max(initial=0))), dtype=np.int64)
    mask = np.arange(matrix.shape[1]) < lengths[:, None]
    matrix[mask] = np.fromiter((t for s in sequences for t in s), dtype=np.int64, count=int(lengths.sum()))
    return matrix, lengths
