"""Tokenization and the word vocabulary.

Tokenization follows what the COCO caption tools do (lower-case, Penn-Treebank style word
splitting, punctuation dropped) but uses nltk's rule-based Treebank tokenizer, which needs no
downloaded data, so it works offline and inside tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from nltk.tokenize import TreebankWordTokenizer

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)

# The punctuation list pycocoevalcap's PTBTokenizer removes after tokenizing.
_COCO_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
     "...", ";", "(", ")", "[", "]", "{", "}", '"']
)
_TREEBANK = TreebankWordTokenizer()


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens of `text` with punctuation removed."""
    tokens = _TREEBANK.tokenize(text.lower().replace("\n", " "))
    # Treebank only splits a full stop at the very end of the string; a caption such as
    # "a dog. on grass." keeps "dog." as one token otherwise.
    words = (token.rstrip(".") if len(token) > 1 else token for token in tokens)
    return [word for word in words if word and word not in _COCO_PUNCTUATION]


class Vocabulary:
    """Bidirectional word <-> id map with the four special tokens at ids 0..3."""

    def __init__(self, words: Sequence[str]):
        self.itos: list[str] = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary words must be unique")

    pad_id = property(lambda self: self.stoi[PAD])
    start_id = property(lambda self: self.stoi[START])
    end_id = property(lambda self: self.stoi[END])
    unk_id = property(lambda self: self.stoi[UNK])

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> "Vocabulary":
        """Vocabulary of every word seen at least `min_count` times, most frequent first."""
        counts = Counter(word for caption in captions for word in tokenize(caption))
        kept = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
        return cls(kept)

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def encode(self, caption: str, max_words: int | None = None) -> list[int]:
        """`<start> w1 .. wn <end>` ids, words beyond `max_words` dropped, unknown words as `<unk>`."""
        words = tokenize(caption)[:max_words]
        return [self.start_id] + [self.stoi.get(w, self.unk_id) for w in words] + [self.end_id]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words of an id sequence, stopping at `<end>` and skipping `<start>`/`<pad>`."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i not in (self.start_id, self.pad_id):
                words.append(self.itos[i])
        return words

    def decode_text(self, ids: Iterable[int]) -> str:
        return " ".join(self.decode(ids))

    def to_dict(self) -> dict:
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, state: dict) -> "Vocabulary":
        itos = state["itos"]
        if list(itos[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"vocabulary must start with {SPECIALS}, got {itos[:4]}")
        return cls(itos[len(SPECIALS):])
