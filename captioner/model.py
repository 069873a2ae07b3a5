"""Show, Attend and Tell (Xu et al., 2015): CNN encoder, soft or hard attention, LSTM decoder.

Letters in shapes: B batch, P grid cells (h·w), D feature dim, E embedding dim, H decoder dim,
A attention dim, T caption length (with <start> and <end>), V vocabulary size.

Both of the paper's attention models share the same α_t = softmax(score(a_i, h_{t-1})):
- soft (§4.2): the context is the expectation z_t = Σ_i α_ti a_i, trained by backpropagation;
- hard (§4.1): a location s_t ~ Multinoulli(α_t) is sampled and z_t = a_{s_t}; `hard_attention_loss`
  is its learning rule (equations 11-12). A hard model decodes with the expected context (see
  `Decoder.attend`), so every caller of the decoder treats both models alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from captioner import fast_paths
from captioner.backbones import build_backbone
from captioner.config import EncoderConfig, ModelConfig
from captioner.images import Preprocess


class Encoder(nn.Module):
    """Pretrained CNN trunk → adaptive pool → grid of feature vectors.

    images (B, 3, S, S) → features (B, P, D) with P = grid².
    Frozen (weights and batch-norm statistics) unless `fine_tune` > 0 last stages are trained.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        # channels_last makes these convolutions markedly faster on CPU and on tensor cores
        self.backbone = build_backbone(config.backbone, config.weights, config.layer).to(
            memory_format=torch.channels_last)
        self.pool = nn.AdaptiveAvgPool2d(config.grid)
        self.grid = config.grid
        self.feature_dim = self.backbone.feature_dim
        self.fine_tune = config.fine_tune
        self.preprocess = Preprocess(config.image_size, self.backbone.mean, self.backbone.std)
        trainable = list(self.backbone.stages)[-config.fine_tune:] if config.fine_tune else []
        self.backbone.requires_grad_(False)
        for stage in trainable:
            stage.requires_grad_(True)
        self._trainable_stages = trainable

    @property
    def frozen(self) -> bool:
        return self.fine_tune == 0

    def train(self, mode: bool = True) -> "Encoder":
        # Frozen stages keep their ImageNet batch-norm statistics even while the decoder trains.
        super().train(mode)
        self.backbone.eval()
        for stage in self._trainable_stages:
            stage.train(mode)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) → features (B, P, D)."""
        images = images.contiguous(memory_format=torch.channels_last)
        # one image at a time is the same function only while no batch norm uses batch statistics:
        # `train()` keeps every stage but the fine-tuned ones in eval mode
        batch_statistics = self.training and bool(self._trainable_stages)
        if fast_paths.enabled(images, frozen=not batch_statistics):
            grid = fast_paths.one_image_at_a_time(self._feature_map, images)
        else:
            grid = self._feature_map(images)  # (B, D, grid, grid)
        return grid.flatten(2).transpose(1, 2)  # (B, P, D)

    def _feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) → (B, D, grid, grid)."""
        return self.pool(self.backbone(images))


class SoftAttention(nn.Module):
    """Deterministic soft attention: α = softmax_P(score(a_i, h)), z = Σ_i α_i a_i.

    Scores: `additive` wᵀtanh(W_a a_i + W_h h) (the paper's MLP), `bilinear` a_iᵀ W h
    ("general"), `dot` (W_a a_i)·(W_h h)/√A. `keys()` projects the features once per image;
    `forward()` is then cheap enough to run at every decoding step.
    """

    SCORES = ("additive", "bilinear", "dot")

    def __init__(self, feature_dim: int, query_dim: int, attention_dim: int, score: str = "additive"):
        super().__init__()
        if score not in self.SCORES:
            raise ValueError(f"model.attention must be one of {self.SCORES}, got {score!r}")
        self.score = score
        if score == "bilinear":
            self.key = nn.Linear(feature_dim, query_dim, bias=False)
            self.query = nn.Identity()
        else:
            self.key = nn.Linear(feature_dim, attention_dim)
            self.query = nn.Linear(query_dim, attention_dim)
        self.energy = nn.Linear(attention_dim, 1) if score == "additive" else None
        self.scale = 1.0 / math.sqrt(attention_dim) if score == "dot" else 1.0

    def keys(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, P, D) → keys (B, P, A) (the query's size Q for bilinear)."""
        return self.key(features)

    def forward(
        self, keys: torch.Tensor, features: torch.Tensor, query: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """keys (B, P, A), features (B, P, D), query (B, Q) → context (B, D), alpha (B, P)."""
        query = self.query(query)  # (B, A) (Q for bilinear)
        if self.energy is None:
            scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1) * self.scale  # (B, P)
        elif fast_paths.enabled(keys):
            scores = fast_paths.additive_scores(keys, query, self.energy)  # the line below, faster
        else:
            scores = self.energy(torch.tanh(keys + query.unsqueeze(1))).squeeze(-1)  # (B, P)
        alpha = scores.softmax(dim=-1)  # (B, P)
        context = torch.bmm(alpha.unsqueeze(1), features).squeeze(1)  # (B, D)
        return context, alpha


class Decoder(nn.Module):
    """LSTM decoder with soft attention, gating β and the paper's deep output layer.

    One step: z = β ⊙ attend(a, h_{t-1});  h_t = LSTM([E y_{t-1}; z], h_{t-1});
    p(y_t) ∝ exp(L_o(E y_{t-1} + L_h h_t + L_z z))  (or L_o h_t without `deep_output`).
    """

    GATES = ("scalar", "vector", "none")
    ATTENTION_MODES = ("soft", "hard")
    ATTENTION_QUERIES = ("hidden", "hidden_and_word")

    def __init__(self, vocab_size: int, feature_dim: int, config: ModelConfig):
        super().__init__()
        if config.gate not in self.GATES:
            raise ValueError(f"model.gate must be one of {self.GATES}, got {config.gate!r}")
        if config.attention_mode not in self.ATTENTION_MODES:
            raise ValueError(f"model.attention_mode must be one of {self.ATTENTION_MODES}, "
                             f"got {config.attention_mode!r}")
        if config.attention_query not in self.ATTENTION_QUERIES:
            raise ValueError(f"model.attention_query must be one of {self.ATTENTION_QUERIES}, "
                             f"got {config.attention_query!r}")
        E, H, D = config.embed_dim, config.decoder_dim, feature_dim
        self.embedding = nn.Embedding(vocab_size, E)
        # Unlike the paper's post-ReLU VGG maps, a CNN's inner feature maps can have large,
        # uneven scales; an optional LayerNorm keeps attention and LSTM inputs well scaled.
        self.feature_norm = nn.LayerNorm(D) if config.feature_norm else nn.Identity()
        # The paper scores the cells against h_{t-1}, which has not read y_{t-1} yet: the glance for a
        # shape word is then chosen before the model knows which colour it has just said.
        # `hidden_and_word` adds E y_{t-1} to the query, as attention placed after the word is read
        # does (Lu et al., 2017; Anderson et al., 2018).
        self.query_word = config.attention_query == "hidden_and_word"
        self.attention = SoftAttention(D, H + E if self.query_word else H, config.attention_dim, config.attention)
        self.init_h = nn.Linear(D, H)
        self.init_c = nn.Linear(D, H)
        self.gate = {"scalar": nn.Linear(H, 1), "vector": nn.Linear(H, D), "none": None}[config.gate]
        self.lstm = nn.LSTMCell(E + D, H)
        self.dropout = nn.Dropout(config.dropout)
        self.deep_output = config.deep_output
        if self.deep_output:
            self.out_hidden = nn.Linear(H, E)
            self.out_context = nn.Linear(D, E)
            self.out = nn.Linear(E, vocab_size)
        else:
            self.out = nn.Linear(H, vocab_size)
        self._compiled_step = None

    def begin(
        self, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Per-image work done once before the first step: features (B, P, D) →
        (normalised features (B, P, D), attention keys (B, P, A), initial (h, c) each (B, H))."""
        features = self.feature_norm(features)
        mean = features.mean(dim=1)  # (B, D)
        state = torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))
        return features, self.attention.keys(features), state

    def step(
        self,
        tokens: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        keys: torch.Tensor,
        features: torch.Tensor,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """tokens (B,) = y_{t-1}, state (h, c) each (B, H), keys (B, P, A) and features (B, P, D)
        from `begin` → logits (B, V), new state, alpha (B, P). Expected context (see `attend`)."""
        logits, state, alpha, _ = self._step(tokens, state, keys, features)
        return logits, state, alpha

    def _step(self, tokens, state, keys, features, sample: bool = False):
        """`step`, also returning the sampled locations (B,) of a hard-attention pass (`sample`)."""
        embedded = self.embedding(tokens)  # (B, E)
        h, c = state
        context, alpha, location = self.attend(keys, features, h, embedded, sample)
        h, c = self.lstm(torch.cat([embedded, context], dim=1), (h, c))  # input (B, E + D)
        if self.deep_output:
            logits = self.out(self.dropout(embedded + self.out_hidden(h) + self.out_context(context)))
        else:
            logits = self.out(self.dropout(h))
        return logits, (h, c), alpha, location

    def attend(self, keys, features, h, embedded, sample: bool = False):
        """Attention and the gate β: keys (B, P, A), features (B, P, D), h (B, H), embedded = E y_{t-1}
        (B, E) → β ⊙ z (B, D), alpha (B, P), and the sampled locations s (B,) when `sample` (else None).

        `sample` is hard attention's training pass: z = a_s with s ~ Multinoulli(α). Otherwise z is
        the expected context Σ_i α_i a_i, which is soft attention and also how a hard model decodes:
        the paper trains it on the expectation for half the batches, so it is a context the model
        knows, and it keeps decoding deterministic, so beam search ranks captions and not draws.
        """
        query = torch.cat([h, embedded], dim=1) if self.query_word else h  # (B, H + E) or (B, H)
        context, alpha = self.attention(keys, features, query)
        location = None
        if sample:
            location = torch.multinomial(alpha.detach().float(), 1).squeeze(1)  # (B,)
            context = features[torch.arange(len(features), device=features.device), location]  # a_s (B, D)
        if self.gate is not None:
            context = torch.sigmoid(self.gate(h)) * context  # β (B, 1) or (B, D)
        return context, alpha, location

    def forward(
        self,
        features: torch.Tensor,
        captions: torch.Tensor,
        lengths: torch.Tensor,
        image_index: torch.Tensor | None = None,
        fused: bool = False,
        sample: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Teacher forcing. features (B, P, D), captions (N, T) with <start>…<end> and padding,
        lengths (N,) counting <start> and <end>, image_index (N,) naming each caption's image
        (None: N = B, caption i belongs to image i) → logits (N, T-1, V), alphas (N, T-1, P),
        and with `sample` (hard attention) the sampled locations (N, T-1), -1 where padded.

        Captions are processed longest first and each step only advances those still running,
        so no compute is spent on padding; padded positions of the outputs are zero.
        `fused` gives the same numbers faster (captioner.fast_paths.teacher_forcing_fused).
        """
        if image_index is None:
            image_index = torch.arange(len(captions), device=captions.device)
        steps = lengths - 1
        order = steps.argsort(descending=True)
        captions, steps, image_index = captions[order], steps[order], image_index[order]
        T = captions.shape[1]
        running_per_step = (steps.unsqueeze(0) > torch.arange(T - 1, device=steps.device).unsqueeze(1)).sum(1)
        running_per_step = running_per_step.tolist()  # captions still running at each step
        if fused:
            logits, alphas, locations = fast_paths.teacher_forcing_fused(
                self, features, captions, image_index, running_per_step, self._compiled_step, sample)
        else:
            logits, alphas, locations = self._teacher_forcing(features[image_index], captions, running_per_step,
                                                              sample)
        inverse = order.argsort()
        return logits[inverse], alphas[inverse], locations[inverse] if sample else None

    def _teacher_forcing(self, features, captions, running_per_step, sample: bool = False):
        """One `step` per time step: features (N, P, D) and captions (N, T) in caption order,
        longest first → logits (N, T-1, V), alphas (N, T-1, P), locations (N, T-1) or None."""
        features, keys, (h, c) = self.begin(features)
        N = len(captions)
        step_logits, step_alphas, step_locations = [], [], []
        for t, n in enumerate(running_per_step):
            logits_t, (h, c), alpha_t, location_t = self._step(captions[:n, t], (h[:n], c[:n]), keys[:n],
                                                               features[:n], sample)
            # padding rows are appended, not written into a preallocated tensor: in-place slice
            # writes would make backward copy the whole (N, T-1, V) gradient at every step
            step_logits.append(F.pad(logits_t, (0, 0, 0, N - n)))
            step_alphas.append(F.pad(alpha_t, (0, 0, 0, N - n)))
            if sample:
                step_locations.append(F.pad(location_t, (0, N - n), value=-1))
        locations = torch.stack(step_locations, dim=1) if sample else None
        return torch.stack(step_logits, dim=1), torch.stack(step_alphas, dim=1), locations

    def compile_step(self) -> None:
        """Compile the fused path's recurrent step (captioner.fast_paths.recurrent_step) with
        torch.compile: its elementwise work then runs as a few fused kernels. The batch shrinks
        from step to step, hence dynamic shapes."""
        self._compiled_step = torch.compile(fast_paths.recurrent_step, dynamic=True)


class CaptionModel(nn.Module):
    """Encoder + Decoder: `forward` is one teacher-forced pass (what DistributedDataParallel wraps)."""

    def __init__(self, config: ModelConfig, vocab_size: int):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.encoder)
        self.decoder = Decoder(vocab_size, self.encoder.feature_dim, config)

    def forward(
        self,
        inputs: torch.Tensor,
        captions: torch.Tensor,
        lengths: torch.Tensor,
        image_index: torch.Tensor | None = None,
        cached: bool = False,
        fused: bool = False,
        sample: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """inputs: images (B, 3, S, S), or their cached features (B, P, D) when `cached`;
        captions (N, T), lengths (N,), image_index (N,), `sample` as in `Decoder.forward` →
        logits (N, T-1, V), alphas (N, T-1, P), sampled locations (N, T-1) or None."""
        features = inputs.float() if cached else self.encoder(inputs)
        return self.decoder(features, captions, lengths, image_index, fused, sample)

    def portable_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights a checkpoint must carry: a frozen pretrained encoder is rebuilt from its
        weights source at load time, so its tensors are left out to keep checkpoints small."""
        state = self.state_dict()
        encoder = self.config.encoder
        if encoder.fine_tune == 0 and encoder.weights != "none":
            state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        return state

    def load_portable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not (k.startswith("encoder.") and self.encoder.frozen)]
        if missing or unexpected:
            raise ValueError(f"checkpoint weights do not fit the model: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")


def caption_loss(
    logits: torch.Tensor,
    captions: torch.Tensor,
    lengths: torch.Tensor,
    alphas: torch.Tensor,
    attention_penalty: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked cross-entropy over real tokens + λ·mean_i (1 − Σ_t α_ti)².

    logits (B, T-1, V), captions (B, T), lengths (B,), alphas (B, T-1, P) → (loss, cross-entropy).
    The paper sums the attention penalty over the P cells; averaging instead keeps λ independent
    of the grid size. Padded steps have α = 0, so they do not count in Σ_t.
    """
    targets = captions[:, 1:]
    real = torch.arange(targets.shape[1], device=targets.device).unsqueeze(0) < (lengths - 1).unsqueeze(1)
    cross_entropy = F.cross_entropy(logits[real].float(), targets[real])
    penalty = ((1.0 - alphas.float().sum(dim=1)) ** 2).mean()
    return cross_entropy + attention_penalty * penalty, cross_entropy


def hard_attention_loss(
    logits: torch.Tensor,
    captions: torch.Tensor,
    lengths: torch.Tensor,
    alphas: torch.Tensor,
    locations: torch.Tensor,
    baseline: float,
    reinforce_weight: float,
    entropy_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's learning rule for hard attention (equations 11-12), as a loss to minimise.

    For a caption y whose locations s̃ were sampled, the rule's gradient of the lower bound L_s is
        ∂log p(y|s̃,a)/∂W + λ_r (log p(y|s̃,a) − b) ∂log p(s̃|a)/∂W + λ_e ∂H[s̃]/∂W,
    with log p(s̃|a) = Σ_t log α_t,s̃_t and H[s̃] = Σ_t H(α_t). The loss is minus the sum of what
    those are gradients of, (log p(y|s̃,a) − b) held constant, over the batch's captions, divided
    by its real tokens so that it is on `caption_loss`'s per-token scale.

    logits (N, T-1, V), captions (N, T), lengths (N,), alphas (N, T-1, P), locations (N, T-1)
    → (loss, cross-entropy per token, log p(y|s̃,a) per caption (N,) for the baseline), the
    last two detached.
    """
    targets = captions[:, 1:]
    real = torch.arange(targets.shape[1], device=targets.device).unsqueeze(0) < (lengths - 1).unsqueeze(1)
    token_log_p = -F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (N, T-1)
    log_likelihood = (token_log_p * real).sum(1)  # log p(y|s̃,a) (N,)
    alphas = alphas.float()
    chosen = alphas.gather(2, locations.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # α_t,s̃_t (N, T-1)
    location_log_p = (chosen.clamp_min(torch.finfo(alphas.dtype).tiny).log() * real).sum(1)  # log p(s̃|a) (N,)
    entropy = (-torch.special.xlogy(alphas, alphas).sum(-1) * real).sum(1)  # H[s̃] (N,)
    advantage = log_likelihood.detach() - baseline
    bound = log_likelihood + reinforce_weight * advantage * location_log_p + entropy_weight * entropy
    tokens = real.sum()
    return -bound.sum() / tokens, -log_likelihood.detach().sum() / tokens, log_likelihood.detach()
