"""The popular PyTorch Show-Attend-and-Tell tutorial's model and loops, re-created for baseline timing.

This is NOT code from that tutorial: we wrote it from a description of how the tutorial's code
works, so that our benchmarks can time the way most people train and caption with this model,
in the same run and on the same machine as our own code. It is a working model (it trains:
tests/test_bench.py checks that its loss falls), but it exists only to be timed; nothing in
captioner/ uses it. What it does the tutorial's way, on purpose, because that is what costs time:

- Encoder: a ResNet trunk (random weights here; speed does not depend on them) + adaptive
  pooling to g×g, output channels last (B, g, g, D); frozen, yet run at every training step.
  Training data is one caption per item, so an image is encoded once per caption.
- Attention: additive, with three linears (encoder_att D→A, decoder_att H→A, full_att A→1) and
  a ReLU; the features' projection encoder_att(a) is recomputed inside the attention call at
  every time step (our model projects them once per image).
- Decoder: LSTMCell over [embedding; β ⊙ context], β = σ(f_beta(h)) (a gate per feature
  channel), h_0 and c_0 from the mean feature, dropout 0.5, fc H→V.
- Training: sort by length, then a Python loop over time steps with
  batch_size_t = Σ (decode_lengths > t), each step writing into preallocated predictions and
  alphas tensors; loss = cross-entropy over pack_padded_sequence(...).data + doubly stochastic
  regularisation; gradients clipped by value; Adam; fp32; loss.item() and top-5 accuracy on the
  host every step (the tutorial's meters).
- Captioning: one image at a time; its features are expanded to k copies; each step does a
  top-k over the k·V flattened scores, takes word and beam with / and %, and removes finished
  hypotheses (so the beam shrinks), scanning words in Python; it stops when all k have
  finished or after 50 steps. Random weights rarely emit <end>, so `forced_steps` masks <end>
  and runs exactly that many steps, making timings comparable (the reference figures use 16).

Letters: B batch, g grid side, P = g·g cells, D feature dim, E embedding dim, H decoder dim,
A attention dim, T caption length (padded), V vocabulary size, k beam size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

MAX_CAPTION_WORDS = 50  # captions are padded to this + <start> + <end>, as the tutorial's data files are
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TutorialEncoder(nn.Module):
    """ResNet trunk without avgpool/fc + adaptive pool: images (B, 3, S, S) → (B, g, g, D)."""

    def __init__(self, backbone: str = "resnet101", grid: int = 14):
        super().__init__()
        network = getattr(torchvision.models, backbone)(weights=None)
        self.resnet = nn.Sequential(*list(network.children())[:-2])
        self.adaptive_pool = nn.AdaptiveAvgPool2d((grid, grid))
        self.resnet.requires_grad_(False)  # the tutorial's default: encoder not fine-tuned
        self.feature_dim = network.fc.in_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) → features (B, g, g, D)."""
        return self.adaptive_pool(self.resnet(images)).permute(0, 2, 3, 1)


class TutorialAttention(nn.Module):
    """Additive attention: features (B, P, D), h (B, H) → context (B, D), alpha (B, P)."""

    def __init__(self, encoder_dim: int, decoder_dim: int, attention_dim: int):
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(decoder_dim, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)

    def forward(self, encoder_out: torch.Tensor, decoder_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        projected = self.encoder_att(encoder_out)  # (B, P, A): recomputed at every step, as in the tutorial
        query = self.decoder_att(decoder_hidden)  # (B, A)
        scores = self.full_att(F.relu(projected + query.unsqueeze(1))).squeeze(2)  # (B, P)
        alpha = scores.softmax(dim=1)
        context = (encoder_out * alpha.unsqueeze(2)).sum(dim=1)  # (B, D)
        return context, alpha


class TutorialDecoder(nn.Module):
    """LSTM decoder with attention and the f_beta gate; teacher forcing in `forward`."""

    def __init__(self, attention_dim: int, embed_dim: int, decoder_dim: int, vocab_size: int,
                 encoder_dim: int = 2048, dropout: float = 0.5):
        super().__init__()
        self.vocab_size = vocab_size
        self.attention = TutorialAttention(encoder_dim, decoder_dim, attention_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(p=dropout)
        self.decode_step = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim)
        self.init_h = nn.Linear(encoder_dim, decoder_dim)
        self.init_c = nn.Linear(encoder_dim, decoder_dim)
        self.f_beta = nn.Linear(decoder_dim, encoder_dim)
        self.fc = nn.Linear(decoder_dim, vocab_size)
        self.embedding.weight.data.uniform_(-0.1, 0.1)
        self.fc.bias.data.zero_()
        self.fc.weight.data.uniform_(-0.1, 0.1)

    def init_hidden_state(self, encoder_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """encoder_out (B, P, D) → h, c each (B, H), from the mean feature."""
        mean = encoder_out.mean(dim=1)
        return self.init_h(mean), self.init_c(mean)

    def step(self, embedded, encoder_out, h, c):
        """One decoding step: embedded (B, E), encoder_out (B, P, D), h, c (B, H) → h, c, alpha (B, P)."""
        context, alpha = self.attention(encoder_out, h)
        context = torch.sigmoid(self.f_beta(h)) * context
        h, c = self.decode_step(torch.cat([embedded, context], dim=1), (h, c))
        return h, c, alpha

    def forward(self, encoder_out: torch.Tensor, encoded_captions: torch.Tensor, caption_lengths: torch.Tensor):
        """encoder_out (B, g, g, D), encoded_captions (B, T), caption_lengths (B, 1) counting
        <start> and <end> → predictions (B, T', V), sorted captions (B, T), decode lengths
        (list of B ints), alphas (B, T', P), sort order (B,); T' = longest decode length."""
        batch_size = encoder_out.size(0)
        encoder_out = encoder_out.reshape(batch_size, -1, encoder_out.size(-1))  # (B, P, D)
        caption_lengths, sort_ind = caption_lengths.squeeze(1).sort(dim=0, descending=True)
        encoder_out, encoded_captions = encoder_out[sort_ind], encoded_captions[sort_ind]
        embeddings = self.embedding(encoded_captions)  # (B, T, E), padding included
        h, c = self.init_hidden_state(encoder_out)
        decode_lengths = (caption_lengths - 1).tolist()
        steps = max(decode_lengths)
        predictions = encoder_out.new_zeros(batch_size, steps, self.vocab_size)
        alphas = encoder_out.new_zeros(batch_size, steps, encoder_out.size(1))
        for t in range(steps):
            batch_size_t = sum(length > t for length in decode_lengths)
            h, c, alpha = self.step(embeddings[:batch_size_t, t], encoder_out[:batch_size_t],
                                    h[:batch_size_t], c[:batch_size_t])
            predictions[:batch_size_t, t] = self.fc(self.dropout(h))
            alphas[:batch_size_t, t] = alpha
        return predictions, encoded_captions, decode_lengths, alphas, sort_ind


def top5_accuracy(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Percentage of targets among the 5 best scores: scores (N, V), targets (N,)."""
    top = scores.topk(5, dim=1).indices
    return (top == targets.unsqueeze(1)).any(dim=1).float().mean().item() * 100


def train_step(decoder: TutorialDecoder, optimizer: torch.optim.Optimizer, encoder_out: torch.Tensor,
               captions: torch.Tensor, lengths: torch.Tensor, alpha_c: float = 1.0,
               grad_clip: float = 5.0) -> tuple[float, float]:
    """One optimizer step on features (B, g, g, D) (already encoded), captions (B, T), lengths
    (B, 1) → (loss, top-5 accuracy) as Python floats, read back every step as the tutorial does."""
    scores, sorted_captions, decode_lengths, alphas, _ = decoder(encoder_out, captions, lengths)
    targets = sorted_captions[:, 1:]
    scores = pack_padded_sequence(scores, decode_lengths, batch_first=True).data
    targets = pack_padded_sequence(targets, decode_lengths, batch_first=True).data
    loss = F.cross_entropy(scores, targets) + alpha_c * ((1.0 - alphas.sum(dim=1)) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    for group in optimizer.param_groups:  # clipping by value, parameter by parameter
        for parameter in group["params"]:
            if parameter.grad is not None:
                parameter.grad.data.clamp_(-grad_clip, grad_clip)
    optimizer.step()
    return loss.item(), top5_accuracy(scores, targets)


def train_step_with_encoder(encoder: TutorialEncoder, decoder: TutorialDecoder, optimizer, images, captions,
                            lengths) -> tuple[float, float]:
    """`train_step` from images (B, 3, S, S): the frozen encoder runs first, every step."""
    return train_step(decoder, optimizer, encoder(images), captions, lengths)


@torch.no_grad()
def caption_image_beam_search(encoder: TutorialEncoder, decoder: TutorialDecoder, image: torch.Tensor,
                              start_id: int, end_id: int, beam_size: int = 3, max_steps: int = 50,
                              forced_steps: int | None = None) -> tuple[list[int], torch.Tensor]:
    """One image (3, S, S) → the best word ids (with <start>, and <end> when one was emitted)
    and its attention maps (L, g, g). With `forced_steps`, <end> is masked and exactly that many
    decoder steps run."""
    k, V = beam_size, decoder.vocab_size
    encoder_out = encoder(image.unsqueeze(0))  # (1, g, g, D)
    grid, D = encoder_out.size(1), encoder_out.size(3)
    encoder_out = encoder_out.view(1, -1, D).expand(k, -1, D)  # (k, P, D)
    previous_words = torch.full((k, 1), start_id, dtype=torch.long, device=image.device)
    sequences = previous_words  # (k, 1)
    top_k_scores = image.new_zeros(k, 1)
    sequence_alphas = image.new_ones(k, 1, grid, grid)
    complete, complete_alphas, complete_scores = [], [], []
    h, c = decoder.init_hidden_state(encoder_out)
    limit = forced_steps or max_steps
    for step in range(1, limit + 1):
        embedded = decoder.embedding(previous_words).squeeze(1)  # (k, E)
        h, c, alpha = decoder.step(embedded, encoder_out, h, c)
        scores = F.log_softmax(decoder.fc(h), dim=1)  # (k, V)
        if forced_steps:
            scores[:, end_id] = float("-inf")
        scores = top_k_scores.expand_as(scores) + scores
        if step == 1:  # all k rows are the same <start>: rank only the first
            top_k_scores, top_k_words = scores[0].topk(k, 0, True, True)
        else:
            top_k_scores, top_k_words = scores.view(-1).topk(k, 0, True, True)
        previous_beams = torch.div(top_k_words, V, rounding_mode="floor")
        next_words = top_k_words % V
        sequences = torch.cat([sequences[previous_beams], next_words.unsqueeze(1)], dim=1)
        sequence_alphas = torch.cat([sequence_alphas[previous_beams],
                                     alpha.view(-1, grid, grid)[previous_beams].unsqueeze(1)], dim=1)
        # one host read per word, as the tutorial's list comprehension over a tensor does
        incomplete = [i for i, word in enumerate(next_words) if word != end_id]
        finished = sorted(set(range(len(next_words))) - set(incomplete))
        if finished:
            complete.extend(sequences[finished].tolist())
            complete_alphas.extend(sequence_alphas[finished])
            complete_scores.extend(top_k_scores[finished])
        k -= len(finished)
        if k == 0:
            break
        sequences, sequence_alphas = sequences[incomplete], sequence_alphas[incomplete]
        kept = previous_beams[incomplete]
        h, c, encoder_out = h[kept], c[kept], encoder_out[kept]
        top_k_scores = top_k_scores[incomplete].unsqueeze(1)
        previous_words = next_words[incomplete].unsqueeze(1)
    if not complete:  # the tutorial fails here; we return the best live hypothesis instead
        best = int(top_k_scores.view(-1).argmax())
        return sequences[best].tolist(), sequence_alphas[best, 1:]
    best = max(range(len(complete_scores)), key=lambda i: float(complete_scores[i]))
    return complete[best], complete_alphas[best][1:]


def preprocess(image, image_size: int = 256) -> torch.Tensor:
    """RGB PIL image → (3, S, S): resized to S×S, scaled to [0, 1], ImageNet-normalised."""
    from torchvision.transforms import functional as TF  # noqa: PLC0415 - only captioning needs it

    pixels = TF.to_tensor(image.resize((image_size, image_size)))
    return TF.normalize(pixels, IMAGENET_MEAN, IMAGENET_STD)


def pad_captions(captions: list[list[int]], pad_id: int = 0, max_words: int = MAX_CAPTION_WORDS) -> torch.Tensor:
    """Encoded captions → (B, max_words + 2), padded to the data files' fixed width."""
    padded = torch.full((len(captions), max_words + 2), pad_id, dtype=torch.long)
    for row, caption in enumerate(captions):
        padded[row, : len(caption)] = torch.tensor(caption)
    return padded
