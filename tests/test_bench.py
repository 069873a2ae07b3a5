"""The benchmark scripts in --quick mode (valid JSON, positive figures, the same run's baseline)
and the tutorial re-creation they time against (a working model, not a stub)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import tutorial_reference as tutorial  # noqa: E402 - bench/ is a script folder, not a package

MACHINE_KEYS = {"benchmark", "date", "device", "device_type", "torch", "torch_threads", "peak_memory_mib",
                "peak_memory_kind", "quick"}


def run_quick(script: str, tmp_path: Path) -> dict:
    """Run bench/<script> --quick; its stdout JSON, checked equal to what --output wrote."""
    output = tmp_path / f"{script}.json"
    done = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--device", "cpu", "--output", str(output)],
                          check=False, capture_output=True, text=True, timeout=180, cwd=BENCH.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert json.loads(output.read_text()) == report
    assert MACHINE_KEYS <= set(report)
    assert report["quick"] is True and report["device_type"] == "cpu"
    assert positive(report["peak_memory_mib"])
    return report


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_train_throughput_quick(tmp_path):
    report = run_quick("train_throughput.py", tmp_path)
    rows = report["rows"]
    paths = {"tutorial reference", "ours plain (fused_decoder=false)", "ours fused", "ours fused, hard attention (sampled)",
             "ours SCST (5 samples, <= 16 words, CIDEr-D)"}
    for mode in ("decoder-only (cached features)", "encoder in the loop"):
        assert {r["path"] for r in rows if r["mode"] == mode} == paths
    for row in rows:
        assert positive(row["captions_per_s"]) and positive(row["step_ms_median"])
        # ours shares each image among 5 captions; the tutorial has one image per caption
        expected_images = row["batch_captions"] if row["path"] == "tutorial reference" else row["batch_captions"] // 5
        assert row["batch_images"] == expected_images
        if row["path"] != "tutorial reference":
            assert positive(row["vs_tutorial"])
    assert set(report["best_captions_per_s"]) == {r["mode"] for r in rows}
    assert "skipped" in report["coco_recipe_memory"]  # CUDA only


def test_caption_throughput_quick(tmp_path):
    report = run_quick("caption_throughput.py", tmp_path)
    for key in ("baseline_one_image_at_a_time_images_per_s", "batched_images_per_s", "speedup",
                "decoding_only_one_image_at_a_time_images_per_s", "decoding_only_batched_images_per_s",
                "files_end_to_end_images_per_s"):
        assert positive(report[key]), key
    cells = {(r["batch_size"], r["beam_size"]) for r in report["scaling"]["rows"]}
    assert cells == {(1, 1), (4, 1), (1, 3), (4, 3)}
    assert all(positive(r["images_per_s"]) for r in report["scaling"]["rows"])
    comparison = report["tutorial_comparison"]["rows"]
    assert {(r["path"], r["beam_size"]) for r in comparison} == {
        (path, beam) for beam in (1, 3)
        for path in ("tutorial reference, one image at a time", "ours, one image at a time", "ours, batched")}
    assert all(positive(r["images_per_s"]) and positive(r["vs_tutorial"]) for r in comparison)


def test_cpu_latency_quick(tmp_path):
    report = run_quick("cpu_latency.py", tmp_path)
    rows = report["coco_size"]["rows"]
    expected = {(path, beam) for path in ("tutorial reference", "ours", "ours, int8 decoder (--quantize)")
                for beam in (1, 3)}
    assert {(r["path"], r["beam_size"]) for r in rows} == expected
    assert all(positive(r["median_ms"]) and positive(r["speedup_vs_tutorial"]) for r in rows)
    assert positive(report["encoder_forward"]["ours_channels_last_median_ms"])
    assert positive(report["encoder_forward"]["tutorial_median_ms"])
    assert positive(report["bundled_model"]["median_ms"])
    assert report["bundled_model"]["caption"]  # the trained bundled model says something


def test_demo_latency_quick(tmp_path):
    report = run_quick("demo_latency.py", tmp_path)
    assert report["runs"] == 2 and report["beam_size"] == 3 and report["image"] == "examples/shapes_5.jpg"
    assert positive(report["median_ms"]) and positive(report["baseline_model_only_median_ms"])
    assert report["p90_ms"] >= report["median_ms"]
    assert len(report["caption"].split()) == report["words"] > 0
    assert "end_to_end_median_ms" not in report and "large_12mp_median_ms" not in report  # --quick skips both


def test_committed_results_are_json_without_machine_paths():
    for path in sorted((BENCH / "results").glob("*.json")):
        text = path.read_text()
        report = json.loads(text)  # the whole file, not a log line before it
        assert isinstance(report, dict) and report, path.name
        for root in ("/work/", "/root/", "/home/", "/tmp/"):
            assert root not in text, (path.name, root)


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread, and much faster when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_tutorial_decoder(vocab_size: int = 20, feature_dim: int = 8, dropout: float = 0.5) -> tutorial.TutorialDecoder:
    return tutorial.TutorialDecoder(attention_dim=16, embed_dim=16, decoder_dim=16, vocab_size=vocab_size,
                                    encoder_dim=feature_dim, dropout=dropout)


def test_tutorial_decoder_learns_a_repeated_batch(one_thread):
    torch.manual_seed(0)
    decoder = tiny_tutorial_decoder(dropout=0.0)  # no dropout noise: the loss must fall steadily
    optimizer = torch.optim.Adam(decoder.parameters(), lr=2e-2)
    features = torch.rand(4, 2, 2, 8)  # (B, g, g, D)
    words = [[1, 5, 6, 7, 2], [1, 8, 9, 2], [1, 10, 11, 12, 13, 2], [1, 14, 2]]
    captions = tutorial.pad_captions(words)
    lengths = torch.tensor([[len(w)] for w in words])
    losses = [tutorial.train_step(decoder, optimizer, features, captions, lengths)[0] for _ in range(40)]
    assert all(b < a for a, b in zip(losses[::10], losses[10::10])), losses[::10]
    assert losses[-1] < 0.3 * losses[0], losses[::10]
    _, top5 = tutorial.train_step(decoder, optimizer, features, captions, lengths)
    assert top5 == 100.0


def test_tutorial_teacher_forcing_shapes_and_padding(one_thread):
    torch.manual_seed(0)
    decoder = tiny_tutorial_decoder().eval()
    words = [[1, 5, 2], [1, 5, 6, 7, 8, 2]]
    predictions, sorted_captions, decode_lengths, alphas, order = decoder(
        torch.rand(2, 2, 2, 8), tutorial.pad_captions(words), torch.tensor([[3], [6]]))
    assert decode_lengths == [5, 2] and order.tolist() == [1, 0]
    assert predictions.shape == (2, 5, 20) and alphas.shape == (2, 5, 4)
    assert torch.equal(sorted_captions[0, :6], torch.tensor(words[1]))
    # the shorter caption stops after its 2 steps: later rows stay zero, earlier ones are distributions
    assert predictions[1, 2:].abs().sum() == 0 and alphas[1, 2:].abs().sum() == 0
    assert torch.allclose(alphas[0].sum(-1), torch.ones(5))


@pytest.mark.parametrize("beam_size", [1, 3])
def test_tutorial_beam_search_forced_steps(beam_size, one_thread):
    torch.manual_seed(0)
    encoder = tutorial.TutorialEncoder("resnet50", grid=2).eval()
    decoder = tutorial.TutorialDecoder(16, 16, 16, 20, encoder.feature_dim).eval()
    sequence, alphas = tutorial.caption_image_beam_search(encoder, decoder, torch.randn(3, 64, 64), start_id=1,
                                                          end_id=2, beam_size=beam_size, forced_steps=5)
    assert len(sequence) == 6 and sequence[0] == 1 and 2 not in sequence[1:]  # <start> + 5 words, no <end>
    assert alphas.shape == (5, 2, 2)
    assert torch.allclose(alphas.sum(dim=(1, 2)), torch.ones(5))
