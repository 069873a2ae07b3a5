"""The `captioner` command line: its parsers, `--help` without heavy imports, the demo's options,
and `captioner evaluate`'s usage errors and default output names."""

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from captioner.checkpoint import BUNDLED_CHECKPOINT, load_checkpoint, save_checkpoint
from captioner.cli import get_args_parser, main
from captioner.cli.demo import APP, app_argv
from captioner.cli.evaluate import default_scores_path
from captioner.report import find_scores

DEMO_OPTIONS = ("--checkpoint", "--host", "--port", "--share", "--device", "--threads")


def imported_after(argv: list[str]) -> tuple[int, str, set[str]]:
    """(exit code, stdout, heavy modules imported) of `captioner ARGV`, run in a fresh interpreter."""
    code = ("import sys\nfrom captioner.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
            "except SystemExit as stop:\n    code = stop.code\n"
            "print('IMPORTED', *sorted({'gradio', 'torch', 'matplotlib'} & set(sys.modules)))\nsys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    output, _, imported = result.stdout.rpartition("IMPORTED")
    return result.returncode, output + result.stderr, set(imported.split())


def subcommand_parsers(parser: argparse.ArgumentParser):
    """(name, parser) of every subcommand, nested ones (`coco download`) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, inner_parser in subcommand_parsers(sub):
                    yield f"{name} {inner}", inner_parser


def test_help_lists_every_subcommand_without_importing_torch():
    code, output, imported = imported_after(["--help"])
    assert code == 0 and not imported
    for name in ("train", "caption", "shapes", "evaluate", "coco", "features", "report", "demo", "export"):
        assert f"    {name} " in output


def test_every_option_of_every_subcommand_explains_itself():
    for name, parser in subcommand_parsers(get_args_parser()):
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"captioner {name} {'/'.join(action.option_strings) or action.dest}"


def test_demo_help_answers_without_importing_gradio():
    code, output, imported = imported_after(["demo", "--help"])
    assert code == 0, output
    assert "usage: captioner demo" in output and "127.0.0.1" in output
    assert all(option in output for option in DEMO_OPTIONS)
    assert "gradio" not in imported and "torch" not in imported


def test_a_bad_demo_option_is_refused_before_gradio_loads():
    code, output, imported = imported_after(["demo", "--port", "http"])
    assert code == 2 and "invalid int value: 'http'" in output
    assert "gradio" not in imported


@pytest.fixture(scope="module")
def app():
    """demo/app.py, loaded as `captioner demo` loads it (gradio is imported here)."""
    pytest.importorskip("gradio")
    spec = importlib.util.spec_from_file_location("captioner_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.parametrize("argv", [[], ["--checkpoint", "model.pt", "--host", "0.0.0.0", "--port", "8080",
                                       "--share", "--device", "cpu", "--threads", "3"]])
def test_the_cli_parses_the_demo_options_as_demo_app_does(app, argv):
    cli = vars(get_args_parser().parse_args(["demo", *argv]))
    del cli["command"], cli["run"]
    assert cli == vars(app.parse_args(argv))
    assert vars(app.parse_args(app_argv(argparse.Namespace(**cli)))) == cli  # what the CLI forwards


def test_captioner_demo_runs_demo_app_with_the_options(app, tmp_path, capsys):
    import torch

    threads = torch.get_num_threads()  # the demo sets its own
    try:
        code = main(["demo", "--checkpoint", str(tmp_path / "missing.pt"), "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert code == 2 and f"checkpoint not found: {tmp_path / 'missing.pt'}" in capsys.readouterr().err


@pytest.fixture
def checkpoint_without_its_data(tmp_path):
    """The bundled model, its config naming a dataset that is not on this machine."""
    payload = load_checkpoint(None)
    payload["config"]["data"].update(root=str(tmp_path / "gone"), split_file=str(tmp_path / "gone" / "split.json"))
    return save_checkpoint(payload, tmp_path / "model.pt")


def test_evaluate_without_data_says_what_to_run(checkpoint_without_its_data, capsys):
    assert main(["evaluate", "--checkpoint", str(checkpoint_without_its_data), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: captioner evaluate needs data: --data-root DIR --split-file FILE")
    assert "captioner shapes --out data/shapes" in error and "Traceback" not in error
    assert "not found" not in error  # what to run, not which file is missing


def test_evaluate_batch_size_is_explained(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--batch-size BATCH_SIZE images per batch when captioning the split (default 64)" in help_text
    assert "CHECKPOINT_SPLIT_scores.json beside the checkpoint" in help_text


def test_evaluate_names_its_scores_after_the_checkpoint_and_split():
    assert default_scores_path("runs/x/checkpoint_best.pt", "val") == Path("runs/x/checkpoint_best_val_scores.json")
    assert default_scores_path(None, "test") == Path(f"{BUNDLED_CHECKPOINT.stem}_test_scores.json")


def test_evaluate_writes_its_scores_beside_the_checkpoint_where_report_finds_them(shapes_data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    checkpoint = Path(shutil.copy(BUNDLED_CHECKPOINT, run / "checkpoint_best.pt"))
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(shapes_data), "--split-file",
                 str(shapes_data / "dataset_shapes.json"), "--no-java", "--quiet", "--num-workers", "0"])
    assert code == 0
    scores = run / "checkpoint_best_test_scores.json"
    assert f"scores: {scores}" in capsys.readouterr().out
    assert json.loads((run / "checkpoint_best_test_scores_results.json").read_text())
    assert find_scores(run)[0] == scores
