import pytest
import torch

from captioner.config import EncoderConfig, ModelConfig
from captioner.decoding import greedy_decode
from captioner.model import CaptionModel, Decoder, Encoder, SoftAttention, caption_loss

B, P, D, V = 3, 16, 24, 11


def small_config(**changes) -> ModelConfig:
    values = dict(embed_dim=8, attention_dim=10, decoder_dim=12, dropout=0.0)
    values.update(changes)
    return ModelConfig(**values)


def random_captions(lengths, vocab_size=V, generator=None):
    T = max(lengths)
    captions = torch.zeros(len(lengths), T, dtype=torch.long)
    for row, length in enumerate(lengths):
        captions[row, 0] = 1
        captions[row, 1 : length - 1] = torch.randint(4, vocab_size, (length - 2,), generator=generator)
        captions[row, length - 1] = 2
    return captions, torch.tensor(lengths)


def test_encoder_gives_grid_of_feature_vectors():
    encoder = Encoder(EncoderConfig(backbone="efficientnet_lite0", weights="none", image_size=64, grid=3))
    features = encoder(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 9, encoder.feature_dim)
    assert not any(p.requires_grad for p in encoder.parameters())  # frozen by default
    encoder.train()
    assert not encoder.backbone.training  # frozen batch-norm statistics stay fixed


def test_fine_tune_unfreezes_only_the_last_stages():
    encoder = Encoder(EncoderConfig(backbone="efficientnet_lite0", weights="none", fine_tune=1))
    last = list(encoder.backbone.stages)[-1]
    trainable = {id(p) for p in encoder.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in last.parameters()}


@pytest.mark.parametrize("score", SoftAttention.SCORES)
def test_attention_weights_sum_to_one_over_cells(score):
    attention = SoftAttention(D, 12, 10, score)
    features = torch.randn(B, P, D)
    context, alpha = attention(attention.keys(features), features, torch.randn(B, 12))
    assert alpha.shape == (B, P) and context.shape == (B, D)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(B))
    torch.testing.assert_close(context, torch.einsum("bp,bpd->bd", alpha, features))


@pytest.mark.parametrize("gate", Decoder.GATES)
@pytest.mark.parametrize("deep_output", [True, False])
@pytest.mark.parametrize("feature_norm", [False, True])
@pytest.mark.parametrize("query", Decoder.ATTENTION_QUERIES)
def test_teacher_forcing_shapes_and_equivalence_with_stepwise_decoding(gate, deep_output, feature_norm, query):
    torch.manual_seed(0)
    decoder = Decoder(V, D, small_config(gate=gate, deep_output=deep_output, feature_norm=feature_norm,
                                         attention_query=query)).eval()
    features = torch.randn(B, P, D)
    captions, lengths = random_captions([5, 7, 3])
    logits, alphas, _ = decoder(features, captions, lengths)
    assert logits.shape == (B, 6, V) and alphas.shape == (B, 6, P)
    # The shrinking-batch loop must equal a plain full-batch loop over every step.
    features, keys, state = decoder.begin(features)
    for t in range(6):
        step_logits, state, alpha = decoder.step(captions[:, t], state, keys, features)
        real = lengths - 1 > t
        torch.testing.assert_close(logits[real, t], step_logits[real])
        torch.testing.assert_close(alphas[real, t], alpha[real])
        assert (logits[~real, t] == 0).all()


@pytest.mark.parametrize("query", Decoder.ATTENTION_QUERIES)
def test_only_a_word_conditioned_query_lets_the_last_word_move_the_glance(query):
    # the same state h_{t-1} and the same image, two different previous words y_{t-1}
    torch.manual_seed(0)
    decoder = Decoder(V, D, small_config(attention_query=query)).eval()
    features, keys, state = decoder.begin(torch.randn(1, P, D).expand(2, P, D))
    _, _, alpha = decoder.step(torch.tensor([4, 5]), state, keys, features)
    moved = (alpha[0] - alpha[1]).abs().max().item()
    assert moved > 1e-4 if query == "hidden_and_word" else moved == 0


def test_an_unknown_attention_query_is_refused():
    with pytest.raises(ValueError, match="attention_query"):
        Decoder(V, D, small_config(attention_query="word"))


def test_loss_ignores_padding():
    torch.manual_seed(0)
    decoder = Decoder(V, D, small_config())
    features = torch.randn(B, P, D)
    captions, lengths = random_captions([5, 7, 3])
    logits, alphas, _ = decoder(features, captions, lengths)
    loss, cross_entropy = caption_loss(logits, captions, lengths, alphas, 1.0)
    scribbled = captions.clone()
    for row, length in enumerate(lengths.tolist()):
        scribbled[row, length:] = torch.randint(0, V, (captions.shape[1] - length,))
    logits2, alphas2, _ = decoder(features, scribbled, lengths)
    loss2, cross_entropy2 = caption_loss(logits2, scribbled, lengths, alphas2, 1.0)
    assert loss.item() == pytest.approx(loss2.item(), abs=0)
    assert cross_entropy.item() == pytest.approx(cross_entropy2.item(), abs=0)


def test_attention_penalty_is_zero_when_each_cell_gets_total_weight_one():
    T1 = P  # P steps, each attending to a different cell: Σ_t α_ti = 1 for every i
    alphas = torch.eye(P).unsqueeze(0)
    captions, lengths = random_captions([T1 + 1])
    logits = torch.zeros(1, T1, V)
    loss, cross_entropy = caption_loss(logits, captions, lengths, alphas, attention_penalty=5.0)
    assert loss.item() == pytest.approx(cross_entropy.item())
    loss_no_attention, ce = caption_loss(logits, captions, lengths, torch.zeros_like(alphas), attention_penalty=5.0)
    assert loss_no_attention.item() == pytest.approx(ce.item() + 5.0)


def test_caption_model_logits_shape():
    config = small_config(encoder=EncoderConfig(weights="none", image_size=64, grid=2))
    model = CaptionModel(config, V)
    captions, lengths = random_captions([4, 6])
    logits, alphas, _ = model(torch.randn(2, 3, 64, 64), captions, lengths)
    assert logits.shape == (2, 5, V) and alphas.shape == (2, 5, 4)


def test_greedy_decode_stops_at_end_and_survives_no_end():
    torch.manual_seed(0)
    decoder = Decoder(V, D, small_config()).eval()
    features = torch.randn(B, P, D)
    with torch.no_grad():  # make <end> (id 2) impossible, then certain
        decoder.out.bias.fill_(0)
        decoder.out.bias[2] = -1e4
    never = greedy_decode(decoder, features, start_id=1, end_id=2, max_len=6)
    assert all(len(c.tokens) == 6 and not c.finished for c in never)
    assert all(c.attention.shape == (6, P) for c in never)
    with torch.no_grad():
        decoder.out.bias[2] = 1e4
    always = greedy_decode(decoder, features, start_id=1, end_id=2, max_len=6)
    assert all(c.tokens == [] and c.finished and c.log_prob == pytest.approx(0.0, abs=1e-4) for c in always)
