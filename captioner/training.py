"""Training with teacher forcing, validation on decoded captions, checkpoints and exact resume.

`fit(config)` reads top to bottom: data → model → optimizer → (resume) → epochs → save.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from captioner import feature_cache
from captioner.checkpoint import load_checkpoint, save_checkpoint
from captioner.config import Config, ConfigError, ModelConfig, from_dict, save_config
from captioner.decoding import DecodingOptions
from captioner.data.coco import (
    CaptionDataset,
    EpochBatchSampler,
    ImageRecord,
    collate_captions,
    load_split,
)
from captioner.device import autocast, keep_freed_memory
from captioner.distributed import Processes, start_processes
from captioner.data.shapes import load_objects
from captioner.evaluation import SHAPES_OBJECTS, decode_records, score_captions
from captioner.inference import Captioner
from captioner.cider import CiderD
from captioner.model import CaptionModel, caption_loss, hard_attention_loss
from captioner.scst import ObjectNamingReward, Reward, ScstOptions, scst_step
from captioner.report import report_after_fit
from captioner.vocab import Vocabulary, tokenize


def cached_features(
    model: CaptionModel, records: Sequence[ImageRecord], cache_dir: Path, split: str, device: torch.device,
    config: Config,
) -> torch.Tensor:
    """Encoder features (N, P, D) float16 of records, memory-mapped from `cache_dir/<split>_<key>`
    (see captioner.feature_cache): encoded on first use, resumed if a build was interrupted, and
    shared with `captioner features` and with other runs of the same encoder config and images."""
    return feature_cache.open_or_build(model.encoder, config.model.encoder, records, cache_dir, split, device,
                                       num_workers=config.data.num_workers, amp=config.train.amp)


def validate(model, vocab, records, device, config: Config, features=None,
             processes: Processes = Processes()) -> dict[str, float]:
    """COCO metrics of greedily decoded captions against all references of each image.
    Each process decodes its share of the images; rank 0 scores them and tells the others."""
    captioner = Captioner(model, vocab, config, device)
    options = DecodingOptions(beam_size=1, max_len=config.train.max_decode_len)
    share = processes.shard(list(range(len(records))))
    share_records = [records[i] for i in share]
    share_features = features[share[0]: share[-1] + 1] if features is not None and share else None
    decoded = decode_records(captioner, share_records, options, share_features, num_workers=config.data.num_workers)
    captions = {}
    for part in processes.gather({i: c.text for i, c in decoded.items()}):
        captions.update(part)
    return processes.broadcast(score_captions(records, captions) if processes.main else None)


@dataclass
class TrainState:
    """Progress that a resumed run must continue from exactly."""

    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already trained
    step: int = 0
    best_score: float = float("-inf")
    epochs_without_improvement: int = 0
    # hard attention's moving-average baseline b of log p(y|s,a); None until the first sampled batch
    hard_baseline: float | None = None


def _checkpoint_payload(config, vocab, model, optimizer, scheduler, state: TrainState, scores=None) -> dict:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "config": config.to_dict(),
        "vocab": vocab.to_dict(),
        "model": model.portable_state_dict(),
        "scores": scores or {},
        "training": {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch,
            "step": state.step,
            "best_score": state.best_score,
            "epochs_without_improvement": state.epochs_without_improvement,
            "hard_baseline": state.hard_baseline,
            "rng": rng,
        },
    }


def build_optimizer(model: CaptionModel, config: Config) -> torch.optim.Optimizer:
    groups = [{"params": list(model.decoder.parameters()), "lr": config.train.lr}]
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    if encoder_params:
        groups.append({"params": encoder_params, "lr": config.train.encoder_lr})
    return torch.optim.Adam(groups, weight_decay=config.train.weight_decay)


def build_scheduler(optimizer, config: Config):
    schedule = config.train.lr_schedule
    if schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=config.train.lr_decay, patience=config.train.lr_patience
        )
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.train.epochs))
    if schedule == "none":
        return None
    raise ValueError(f"train.lr_schedule must be plateau, cosine or none, got {schedule!r}")


def clip_gradients(parameters, config: Config) -> None:
    if config.train.grad_clip <= 0:
        return
    if config.train.clip_mode == "norm":
        torch.nn.utils.clip_grad_norm_(parameters, config.train.grad_clip)
    elif config.train.clip_mode == "value":
        torch.nn.utils.clip_grad_value_(parameters, config.train.grad_clip)
    else:
        raise ValueError(f"train.clip_mode must be norm or value, got {config.train.clip_mode!r}")


class StopRequest:
    """Turns Ctrl-C into a request honoured between steps, so the checkpoint is consistent."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        with contextlib.suppress(ValueError):  # signal handlers only exist in the main thread
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("stopping after this step (Ctrl-C again to abort without saving)")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def training_step(model, batch: dict, optimizer, config: Config, device, state: TrainState | None = None,
                  self_critical: SelfCritical | None = None) -> dict[str, torch.Tensor | float]:
    """One optimizer step on a collated batch; `model` is a CaptionModel or its
    DistributedDataParallel wrapper. Teacher forcing (a hard-attention model samples its
    locations, see `sample_locations`, and updates the baseline kept in `state`), or with
    train.objective=scst a self-critical step (`self_critical`). Returns the step's figures,
    detached: loss and cross_entropy, or loss and the SCST statistics (captioner.scst)."""
    inputs = batch["inputs"].to(device, non_blocking=True)
    if config.train.objective == "scst":
        with autocast(device, config.train.amp):
            features = inputs.float() if config.data.cache_features else model.encoder(inputs)
            loss, figures = scst_step(model, features, batch["indices"], self_critical.reward,
                                      self_critical.options, self_critical.vocab)
    else:
        loss, figures = _teacher_forcing_loss(model, batch, inputs, config, device, state)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients([p for p in model.parameters() if p.requires_grad], config)
    optimizer.step()
    return {"loss": loss.detach(), **figures}


def _teacher_forcing_loss(model, batch: dict, inputs, config: Config, device, state: TrainState | None):
    """(loss, {"cross_entropy"}) of teacher forcing, with hard attention's rule when it samples."""
    captions = batch["captions"].to(device, non_blocking=True)
    lengths = batch["lengths"].to(device)
    sample = sample_locations(config)
    with autocast(device, config.train.amp):
        logits, alphas, locations = model(inputs, captions, lengths, batch["image_index"].to(device),
                                          cached=config.data.cache_features, fused=config.train.fused_decoder,
                                          sample=sample)
    if not sample:
        loss, cross_entropy = caption_loss(logits, captions, lengths, alphas, config.train.attention_penalty)
        return loss, {"cross_entropy": cross_entropy.detach()}
    state = state if state is not None else TrainState()
    baseline = state.hard_baseline
    loss, cross_entropy, log_likelihood = hard_attention_loss(
        logits, captions, lengths, alphas, locations, baseline if baseline is not None else 0.0,
        config.train.hard_reinforce_weight, config.train.hard_entropy_weight)
    state.hard_baseline = _moving_average(baseline, log_likelihood.mean().item(), config.train.hard_baseline_decay)
    return loss, {"cross_entropy": cross_entropy}


@dataclass(frozen=True)
class SelfCritical:
    """What a self-critical step needs besides its batch: the reward (CIDEr-D against each
    training image's references, plus the object naming term with train.scst_object_reward), in
    the training records' order (a batch's `indices`), the vocabulary, and the sampling options."""

    reward: Reward
    vocab: Vocabulary
    options: ScstOptions

    @classmethod
    def build(cls, records: Sequence[ImageRecord], vocab: Vocabulary, config: Config) -> SelfCritical:
        """Document frequencies come from all the training references, once (Rennie et al.)."""
        references = [[vocab.encode(c, config.data.max_caption_words) for c in r.captions]
                      for r in tqdm(records, desc="CIDEr-D references", unit="image", leave=False)]
        self_critical = cls.from_references(references, vocab, config)
        weight = config.train.scst_object_reward
        if not weight:
            return self_critical
        reward = ObjectNamingReward(self_critical.reward, _shapes_objects(config, records), vocab, weight)
        return dataclasses.replace(self_critical, reward=reward)

    @classmethod
    def from_references(cls, references: Sequence[Sequence[Sequence[int]]], vocab: Vocabulary,
                        config: Config) -> SelfCritical:
        """`references[i]`: the token-id references of training image i."""
        options = ScstOptions(samples=config.train.scst_samples, max_len=config.train.scst_max_len,
                              temperature=config.train.scst_temperature, baseline=config.train.scst_baseline)
        return cls(CiderD.from_vocab(references, vocab), vocab, options)


def _shapes_objects(config: Config, records: Sequence[ImageRecord]) -> list:
    """The objects of each training record, for the object naming reward."""
    path = Path(config.data.root) / SHAPES_OBJECTS
    if not path.is_file():
        raise ConfigError(f"train.scst_object_reward needs each training image's objects, from {path}, which is "
                          f"missing: it is written by `captioner shapes`; set train.scst_object_reward=0 for "
                          f"other data")
    objects = load_objects(path)
    missing = [r.image_id for r in records if r.image_id not in objects]
    if missing:
        raise ConfigError(f"{path} has no objects for {len(missing)} training images (the first: image id "
                          f"{missing[0]}); is data.root the world the split file was written with?")
    return [objects[r.image_id] for r in records]


def sample_locations(config: Config) -> bool:
    """Whether this batch samples hard attention's locations: with probability
    train.hard_expected_context a hard model trains on the expected context instead, the paper's
    way (§4.1) to lower the variance of its estimator. Drawn from torch's RNG, so a resumed run
    makes the same draws."""
    if config.model.attention_mode != "hard":
        return False
    return torch.rand(()).item() >= config.train.hard_expected_context


def _moving_average(baseline: float | None, value: float, decay: float) -> float:
    """b ← decay·b + (1 − decay)·value; the first value starts it, since any fixed start (the
    paper gives none) would be far from log p(y|s,a) for the first hundreds of batches."""
    return value if baseline is None else decay * baseline + (1 - decay) * value


def train_one_epoch(model, loader, optimizer, config: Config, device, state: TrainState, save_last, stop: StopRequest,
                    processes: Processes = Processes(), self_critical: SelfCritical | None = None):
    """One pass over `loader`; returns the epoch's mean figures (over all processes), each
    `train_<figure>` of `training_step`, with captions/s (sampled captions under SCST) and the
    seconds it took."""
    model.train()
    # running sums stay on the device: one host sync per progress update, not per step
    totals: dict[str, torch.Tensor] = {}
    batches = captions_seen = 0
    # the bar shows what the objective moves: hard attention's loss is a surrogate, not a likelihood
    shown = "reward" if self_critical else "cross_entropy"
    started = time.perf_counter()
    progress = tqdm(loader, desc=f"epoch {state.epoch + 1}/{config.train.epochs}", unit="batch",
                    initial=state.batch_in_epoch, total=state.batch_in_epoch + len(loader), leave=False,
                    disable=not processes.main)
    for batch in progress:
        figures = training_step(model, batch, optimizer, config, device, state, self_critical)
        state.step += 1
        state.batch_in_epoch += 1
        batches += 1
        captions_seen += len(batch["inputs"]) * self_critical.options.samples if self_critical \
            else len(batch["captions"])
        for key, value in figures.items():
            totals[key] = totals.get(key, torch.zeros((), device=device)) + value
        if batches % 20 == 0:
            elapsed = time.perf_counter() - started
            progress.set_postfix({shown: f"{totals[shown].item() / batches:.3f}",
                                  "captions_per_s": f"{captions_seen * processes.world_size / elapsed:.0f}"})
        if config.train.checkpoint_every and state.step % config.train.checkpoint_every == 0:
            save_last()
        # processes must agree to stop at the same step, or the others would wait forever;
        # asking every 20 steps keeps that agreement off the critical path
        if (not processes.distributed or batches % 20 == 0) and processes.any(stop.requested, device):
            stop.requested = True
            break
    keys = sorted(totals)
    summed = processes.sum(torch.stack([*(totals[k] for k in keys), torch.tensor(float(batches), device=device)]))
    *sums, all_batches = summed.tolist()
    seconds = time.perf_counter() - started
    return {
        **{f"train_{key}": value / max(all_batches, 1) for key, value in zip(keys, sums)},
        "captions_per_s": captions_seen * processes.world_size / max(seconds, 1e-9),
        "train_seconds": seconds,
    }


def fit(config: Config, resume: str | Path | None = None, init: str | Path | None = None) -> Path:
    """Train a captioner as configured; returns the run folder holding the checkpoints.

    `init` (a checkpoint path, or "bundled") starts from a trained model instead of random
    weights: its model config and its vocabulary, kept fixed, are used (see `_vocabulary`).

    Under `torchrun --nproc_per_node=N` each process trains on its share of every batch with
    DistributedDataParallel; rank 0 alone writes the run folder. One process under torchrun
    gives the same run as no torchrun.
    """
    processes, device = start_processes(config.train.device)
    keep_freed_memory()
    try:
        return _fit(config, resume, processes, device, init)
    finally:
        processes.close()


def _fit(config: Config, resume, processes: Processes, device: torch.device, init=None) -> Path:
    torch.manual_seed(config.train.seed + processes.rank)  # each process its own dropout masks
    checkpoint = load_checkpoint(resume) if resume else None
    init_checkpoint = _init_checkpoint(init, resume)
    if init_checkpoint is not None:
        config = _with_init_model(config, init_checkpoint, init, processes.main)
    run_dir = Path(config.output_dir)
    if processes.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")

    # data
    train_records = load_split(config.data, config.data.train_split)
    val_records = load_split(config.data, config.data.val_split)[: config.data.val_max_images]
    vocab = _vocabulary(config, train_records, checkpoint, init_checkpoint, processes.main)

    # model
    model = CaptionModel(config.model, len(vocab)).to(device)
    if init_checkpoint is not None:
        model.load_portable_state_dict(init_checkpoint["model"])
    if config.data.cache_features and not model.encoder.frozen:
        raise ValueError("data.cache_features needs a frozen encoder (model.encoder.fine_tune=0)")
    train_features = val_features = None
    if config.data.cache_features:
        cache_dir = Path(config.data.feature_cache_dir or run_dir)
        for turn in (True, False):  # rank 0 encodes; the others then open what it wrote
            if processes.main == turn:
                train_features = cached_features(model, train_records, cache_dir, "train", device, config)
                val_features = cached_features(model, val_records, cache_dir, "val", device, config)
            processes.barrier()
    dataset, sampler, loader = _training_loader(config, model, vocab, train_records, train_features, processes,
                                                device)
    self_critical = _self_critical(config, train_records, vocab, processes, resumed=checkpoint is not None,
                                   initialised=init_checkpoint is not None)

    if config.train.compile:
        if device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
            raise ConfigError("train.compile on a CPU needs a C++ compiler (torch.compile builds C++ kernels): "
                              "install g++ (apt-get install g++) or set train.compile=false")
        model.decoder.compile_step()
    # DDP averages gradients over processes (and starts every process from rank 0's weights)
    trained = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if processes.distributed else model

    # optimizer
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    state = TrainState()
    if checkpoint is not None:
        state = _restore(checkpoint, model, optimizer, scheduler)

    def save_last(scores=None):
        payload = _checkpoint_payload(config, vocab, model, optimizer, scheduler, state, scores)
        if processes.main:
            save_checkpoint(payload, run_dir / "checkpoint_last.pt")
        return payload

    # epochs
    with StopRequest() as stop:
        while state.epoch < config.train.epochs and not stop.requested:
            dataset.set_epoch(state.epoch)
            sampler.set_epoch(state.epoch, state.batch_in_epoch)
            figures = train_one_epoch(trained, loader, optimizer, config, device, state, save_last, stop, processes,
                                      self_critical)
            if stop.requested:
                save_last()
                break
            scores = validate(model, vocab, val_records, device, config, val_features, processes)
            score = scores[config.train.val_metric]
            improved = score > state.best_score
            state.best_score = max(state.best_score, score)
            state.epochs_without_improvement = 0 if improved else state.epochs_without_improvement + 1
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(score)
            elif scheduler is not None:
                scheduler.step()
            if processes.main:
                line = {"epoch": state.epoch + 1, "step": state.step, **figures,
                        **{f"val_{k}": v for k, v in scores.items()}, "lr": optimizer.param_groups[0]["lr"]}
                with open(run_dir / "metrics.jsonl", "a") as log:
                    log.write(json.dumps(line) + "\n")
                tqdm.write(f"epoch {state.epoch + 1}: loss {figures['train_loss']:.3f} "
                           f"val {config.train.val_metric} {score:.3f} (best {state.best_score:.3f})")
            state.epoch += 1
            state.batch_in_epoch = 0

            # save
            payload = save_last(scores)
            if improved and processes.main:
                save_checkpoint(payload, run_dir / "checkpoint_best.pt")
            if config.train.early_stopping and state.epochs_without_improvement >= config.train.early_stopping:
                if processes.main:
                    tqdm.write(f"early stopping: no {config.train.val_metric} gain in "
                               f"{state.epochs_without_improvement} epochs")
                break
    if config.train.report and not stop.requested and processes.main:  # Ctrl-C: "stop now", not "draw plots"
        report_after_fit(run_dir, device)
    return run_dir


def _self_critical(config: Config, records, vocab: Vocabulary, processes: Processes, resumed: bool,
                   initialised: bool) -> SelfCritical | None:
    """What train.objective=scst needs (None for cross-entropy), after checking it can run."""
    objective = config.train.objective
    if objective == "cross_entropy":
        return None
    if objective != "scst":
        raise ConfigError(f"train.objective must be cross_entropy or scst, got {objective!r}")
    if not (resumed or initialised):
        raise ConfigError("train.objective=scst is a second stage: start it from a cross-entropy checkpoint "
                          "with --init CKPT (or continue an SCST run with --resume)")
    if processes.distributed:
        # scst_step samples through model.decoder, outside DistributedDataParallel's forward, so
        # DDP would not average the gradients
        raise ConfigError("train.objective=scst runs in one process for now: start it without torchrun")
    return SelfCritical.build(records, vocab, config)


def _init_checkpoint(init, resume) -> dict | None:
    """The checkpoint of a trained model to start from (`--init`: a path, or "bundled")."""
    if init is None:
        return None
    if resume:
        raise ConfigError("--init and --resume exclude each other: --resume continues a run, "
                          "--init starts a new one from a trained model")
    return load_checkpoint(None if str(init) == "bundled" else init)


def _with_init_model(config: Config, init_checkpoint: dict, init, main: bool) -> Config:
    """`config` with the init checkpoint's model config: its weights only fit the architecture
    (and the encoder's features) they were trained with."""
    model = from_dict(ModelConfig, init_checkpoint["config"]["model"], "model.")
    if main and model != config.model:
        tqdm.write(f"--init: the model config (architecture, encoder) is the one of {init}, not the recipe's")
    return dataclasses.replace(config, model=model)


def _vocabulary(config: Config, records: Sequence[ImageRecord], checkpoint: dict | None,
                init_checkpoint: dict | None, main: bool) -> Vocabulary:
    """A resumed run's own vocabulary; else an init checkpoint's, kept fixed (its embedding and
    output rows are trained weights, and a fixed vocabulary keeps the model loadable by everything
    that reads checkpoints; words new to it train as <unk>, which is reported); else the
    training captions' words seen at least data.min_word_count times."""
    if checkpoint is not None:
        return Vocabulary.from_dict(checkpoint["vocab"])
    if init_checkpoint is None:
        return Vocabulary.build((c for r in records for c in r.captions), config.data.min_word_count)
    vocab = Vocabulary.from_dict(init_checkpoint["vocab"])
    new = unknown_words(vocab, (c for r in records for c in r.captions))
    if main:
        shown = "; most frequent: " + ", ".join(word for word, _ in new.most_common(10)) if new else ""
        tqdm.write(f"fixed vocabulary ({len(vocab)} words): {len(new)} words of the training captions are new to it "
                   f"and train as <unk> ({sum(new.values())} occurrences{shown})")
    return vocab


def unknown_words(vocab: Vocabulary, captions: Iterable[str]) -> Counter:
    """{word: occurrences} of the words of `captions` that `vocab` does not hold."""
    return Counter(word for caption in captions for word in tokenize(caption) if word not in vocab.stoi)


def _training_loader(config: Config, model: CaptionModel, vocab: Vocabulary, records: Sequence[ImageRecord],
                     features: torch.Tensor | None, processes: Processes, device: torch.device):
    """(dataset, sampler, loader) of the training captions: images, or their cached `features`."""
    dataset = CaptionDataset(
        records, vocab,
        preprocess=None if features is not None else model.encoder.preprocess,
        features=features, captions_per_image=config.data.captions_per_image,
        max_words=config.data.max_caption_words, seed=config.train.seed,
    )
    sampler = EpochBatchSampler(len(dataset), config.train.batch_size, config.train.seed,
                                rank=processes.rank, world_size=processes.world_size)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_captions,
                        num_workers=0 if features is not None else config.data.num_workers,
                        pin_memory=device.type == "cuda",
                        # its own generator keeps worker seeding off the global RNG that dropout uses,
                        # so a run resumed mid-epoch draws the same dropout masks
                        generator=torch.Generator().manual_seed(config.train.seed))
    return dataset, sampler, loader


def _restore(checkpoint: dict, model, optimizer, scheduler) -> TrainState:
    """Load weights and training progress so that the run continues as if never stopped."""
    model.load_portable_state_dict(checkpoint["model"])
    training = checkpoint["training"]
    optimizer.load_state_dict(training["optimizer"])
    if scheduler is not None and training["scheduler"]:
        scheduler.load_state_dict(training["scheduler"])
    torch.set_rng_state(training["rng"]["torch"])
    if "cuda" in training["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(training["rng"]["cuda"])
    return TrainState(
        epoch=training["epoch"],
        batch_in_epoch=training["batch_in_epoch"],
        step=training["step"],
        best_score=training["best_score"],
        epochs_without_improvement=training["epochs_without_improvement"],
        hard_baseline=training.get("hard_baseline"),
    )
