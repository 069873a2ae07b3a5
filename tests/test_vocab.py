from captioner.vocab import SPECIALS, Vocabulary, tokenize


def test_tokenize_lowercases_and_drops_punctuation_like_coco():
    assert tokenize("A man, riding a horse... on the beach!") == ["a", "man", "riding", "a", "horse", "on", "the", "beach"]
    assert tokenize("Two dogs. They're playing.") == ["two", "dogs", "they", "'re", "playing"]
    assert tokenize("  ") == []


def test_build_counts_words_and_applies_min_count():
    vocab = Vocabulary.build(["a red circle", "a blue circle", "a red star"], min_count=2)
    assert vocab.itos[: len(SPECIALS)] == list(SPECIALS)
    assert vocab.itos[len(SPECIALS):] == ["a", "circle", "red"]  # most frequent first, ties by name


def test_encode_decode_round_trip_with_unknown_words_and_truncation():
    vocab = Vocabulary.build(["a red circle"])
    ids = vocab.encode("A red square circle")
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id
    assert vocab.decode(ids) == ["a", "red", "<unk>", "circle"]
    assert vocab.decode(vocab.encode("a red circle", max_words=2)) == ["a", "red"]
    assert vocab.decode([vocab.start_id, vocab.stoi["red"], vocab.end_id, vocab.stoi["a"]]) == ["red"]


def test_dict_round_trip():
    vocab = Vocabulary.build(["a red circle", "two blue stars"])
    assert Vocabulary.from_dict(vocab.to_dict()) == vocab
    assert Vocabulary.from_dict(vocab.to_dict()).stoi == vocab.stoi
