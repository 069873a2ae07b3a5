import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import captioner.training as training
from captioner import feature_cache
from captioner.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from captioner.config import load_config
from captioner.data.coco import CaptionDataset, collate_captions, load_split
from captioner.decoding import DecodingOptions, greedy_decode
from captioner.evaluation import decode_records
from captioner.model import CaptionModel, caption_loss
from captioner.inference import Captioner, load_model
from captioner.training import fit
from captioner.vocab import Vocabulary

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def tiny_config(shapes_data, out, *overrides):
    return load_config(TINY, [f"data.root={shapes_data}", f"data.split_file={shapes_data / 'dataset_shapes.json'}",
                              f"output_dir={out}", *overrides])


def test_tiny_model_overfits_one_batch_and_decodes_it(shapes_data, tmp_path):
    torch.manual_seed(0)
    config = tiny_config(shapes_data, "unused", "model.dropout=0.0")
    records = load_split(config.data, "train")[:4]
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    model = CaptionModel(config.model, len(vocab))
    features = feature_cache.build(model.encoder, config.model.encoder, records, tmp_path / "features",
                                   torch.device("cpu"), progress=False)
    batch = collate_captions([CaptionDataset(records, vocab, features=features, captions_per_image=1)[i]
                              for i in range(4)])
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=1e-2)
    for _ in range(150):
        grid = batch["inputs"].float()[batch["image_index"]]
        logits, alphas, _ = model.decoder(grid, batch["captions"], batch["lengths"])
        loss, cross_entropy = caption_loss(logits, batch["captions"], batch["lengths"], alphas, 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert cross_entropy.item() < 0.05
    model.eval()
    decoded = greedy_decode(model.decoder, batch["inputs"].float(), vocab.start_id, vocab.end_id, max_len=30)
    for row, caption in enumerate(decoded):
        target = batch["captions"][row, 1 : batch["lengths"][row] - 1].tolist()
        assert caption.tokens == target and caption.finished


def test_checkpoint_round_trip_gives_identical_captions(shapes_data, tmp_path):
    torch.manual_seed(0)
    config = tiny_config(shapes_data, tmp_path)
    records = load_split(config.data, "val")
    vocab = Vocabulary.build(c for r in load_split(config.data, "train") for c in r.captions)
    model = CaptionModel(config.model, len(vocab)).eval()
    save_checkpoint({"config": config.to_dict(), "vocab": vocab.to_dict(), "model": model.portable_state_dict()},
                    tmp_path / "model.pt")
    # The frozen pretrained encoder is rebuilt from its package, not stored in the file.
    assert not any(k.startswith("encoder.") for k in torch.load(tmp_path / "model.pt", weights_only=True)["model"])
    loaded, loaded_vocab, loaded_config = load_model(tmp_path / "model.pt")
    assert loaded_vocab == vocab and loaded_config == config
    options = DecodingOptions(beam_size=2, max_len=12)
    before = decode_records(Captioner(model, vocab, config, torch.device("cpu")), records, options)
    after = decode_records(Captioner(loaded, loaded_vocab, loaded_config, torch.device("cpu")), records, options)
    assert len(after) == len(records)
    for image_id, caption in before.items():
        assert after[image_id].tokens == caption.tokens
        assert after[image_id].log_prob == pytest.approx(caption.log_prob, abs=1e-5)


class Crash(RuntimeError):
    pass


def test_resume_after_a_crash_matches_an_uninterrupted_run(shapes_data, tmp_path, monkeypatch):
    overrides = ["train.epochs=2", "train.batch_size=4", "train.checkpoint_every=1", "train.seed=3"]
    full = fit(tiny_config(shapes_data, tmp_path / "full", *overrides))

    calls = {"n": 0}
    real_loss = training.caption_loss

    def crashing_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # step 5 of 6: mid-way through the second epoch
            raise Crash
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(training, "caption_loss", crashing_loss)
    with pytest.raises(Crash):
        fit(tiny_config(shapes_data, tmp_path / "crashed", *overrides))
    monkeypatch.setattr(training, "caption_loss", real_loss)
    interrupted = load_checkpoint(tmp_path / "crashed" / "checkpoint_last.pt")
    assert (interrupted["training"]["epoch"], interrupted["training"]["batch_in_epoch"]) == (1, 1)
    fit(tiny_config(shapes_data, tmp_path / "crashed", *overrides), resume=tmp_path / "crashed" / "checkpoint_last.pt")

    expected = load_checkpoint(full / "checkpoint_last.pt")
    resumed = load_checkpoint(tmp_path / "crashed" / "checkpoint_last.pt")
    assert resumed["training"]["step"] == expected["training"]["step"] == 6
    assert resumed["training"]["best_score"] == pytest.approx(expected["training"]["best_score"])
    for key, value in expected["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    lines = (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # one line per finished epoch, none lost or repeated


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt.*corrupt"):
        load_checkpoint(garbage)
    real = save_checkpoint({"model": {"w": torch.ones(1000)}}, tmp_path / "real.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(real.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a captioner checkpoint"):
        load_checkpoint(foreign)
    result = subprocess.run([sys.executable, "-m", "captioner", "caption", str(REPO / "tests/fixtures/coffee.png"),
                             "--checkpoint", str(garbage)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "garbage.pt" in result.stderr and "Traceback" not in result.stderr


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint({"model": {"w": torch.ones(3)}}, tmp_path / "c.pt")
    with pytest.raises(Exception, match="lambda"):  # unpicklable: fails half-way through writing
        save_checkpoint({"model": {"w": torch.zeros(3)}, "bad": lambda: 0}, path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_train_script_runs_end_to_end_then_captions(shapes_data, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, str(REPO / "train.py"), "--config", str(TINY), "--set", f"data.root={shapes_data}",
               f"data.split_file={shapes_data / 'dataset_shapes.json'}", f"output_dir={out}"]
    subprocess.run(command, check=True, timeout=60, capture_output=True)
    assert {"config.yaml", "metrics.jsonl", "checkpoint_last.pt", "checkpoint_best.pt"} <= {p.name for p in out.iterdir()}
    assert load_config(out / "config.yaml").output_dir == str(out)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    image = next((shapes_data / "val2014").iterdir())
    result = subprocess.run([sys.executable, "-m", "captioner", "caption", str(image), "--checkpoint",
                             str(out / "checkpoint_best.pt"), "--quiet"], capture_output=True, text=True, check=True)
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["path"] == str(image) and record["caption"].split()
