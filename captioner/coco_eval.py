"""COCO caption evaluation that reports the numbers papers report.

What is official. Papers score captions with the COCO caption evaluation code, published as
`pycocoevalcap`: every reference and candidate caption is tokenized by Stanford CoreNLP's
PTBTokenizer (Java, lower-cased, one caption per line) and stripped of pycocoevalcap's punctuation
list; then pycocoevalcap's scorers give BLEU-1..4, METEOR 1.5 (Java), ROUGE-L and CIDEr (its
"CIDEr" is CIDEr-D: Gaussian length penalty, clipped counts, document frequencies from the
references of the scored images). This module runs exactly that: the same jar, Java class,
arguments and punctuation removal for tokenizing, the same METEOR jar, command and line protocol,
and pycocoevalcap's own BLEU, ROUGE-L and CIDEr classes, on the images present in the results
only (the Karpathy test split is a subset of val2014). SPICE runs only when the Stanford CoreNLP
3.6.0 jars it needs are already in pycocoevalcap's spice/lib folder: pycocoevalcap would download
them, which cannot happen offline, so otherwise the report says SPICE was skipped.

Why not call pycocoevalcap's PTBTokenizer/Meteor/Spice classes themselves: they write temporary
files into (and run from) the installed package folder, which may be read-only and is shared by
every evaluation running at once. Here every tokenizer run gets a private temporary folder, and
METEOR's JVM starts first so that loading its paraphrase table (the slowest step) overlaps
tokenizing and the pure-Python scorers, then scores in a thread beside them.

Order matters. The PTB lexer looks past the end of a line (an initial such as "a." is split off
when the next line starts with "A" or "The"), so a caption's tokens can depend on the caption
that follows it. COCOEvalCap tokenizes the references, then the candidates, in two runs, in the
order of the ground-truth file's images; so does this module (the two JVMs run at the same time).
One run for both would change the tokens of the last reference; sorted ids would change others.
Tests check every figure against pycocoevalcap's COCOEvalCap to 1e-6.

The fallback. Without `java` on PATH (or with `java=False`) captions are tokenized in Python by
`captioner.vocab.tokenize` (lower-cased Treebank tokens, pycocoevalcap's punctuation dropped),
BLEU, ROUGE-L and CIDEr are computed by the same scorers, METEOR (and SPICE) are omitted, and the
report's `tokenizer` and `notes` say the figures are approximate. For plain lower-case captions
without punctuation both tokenizers agree, and so do the scores.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Self

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as pycoco_meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice import get_stanford_models as pycoco_spice_models
from pycocoevalcap.spice import spice as pycoco_spice
from pycocoevalcap.tokenizer import ptbtokenizer as pycoco_ptb

from captioner.data.coco import DatasetError, load_karpathy_split
from captioner.vocab import tokenize

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
JAVA_TOKENIZER = "PTBTokenizer (Stanford CoreNLP 3.4.1, Java; the official COCO tokenization)"
PYTHON_TOKENIZER = (
    "python (approximate; install Java for the exact COCO figures: apt-get install default-jre-headless)"
)
# How many offending ids or entries an error message lists.
_SHOWN = 5

# pycocoevalcap's tokenizer: jar, Java class and arguments as in PTBTokenizer.tokenize.
_PTB_JAR = Path(pycoco_ptb.__file__).parent / pycoco_ptb.STANFORD_CORENLP_3_4_1_JAR
_PTB_COMMAND = ("edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase")
# Removed after tokenizing. The list holds "-LRB-" but the tokens are lower-cased by then, so
# brackets survive as "-lrb-"/"-rrb-" in the official figures; kept that way on purpose.
_PUNCTUATION = frozenset(pycoco_ptb.PUNCTUATIONS)
# pycocoevalcap replaces "\n" only, but the Java tokenizer also ends a line at these; a caption
# holding one would shift every later caption onto the wrong image, so they become spaces too.
_LINE_BREAKS = str.maketrans({char: " " for char in "\n\r\x0b\x0c\u2028\u2029"})
# pycocoevalcap's METEOR: jar, folder (it finds its paraphrase data from there) and arguments.
_METEOR_DIR = Path(pycoco_meteor.__file__).parent
_METEOR_COMMAND = ("-jar", "-Xmx2G", pycoco_meteor.METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm")
# pycocoevalcap's SPICE and the CoreNLP jars it downloads into spice/lib when they are missing.
_SPICE_DIR = Path(pycoco_spice.__file__).parent
_SPICE_LIB = Path(pycoco_spice_models.SPICEDIR) / pycoco_spice_models.SPICELIB
_SPICE_JARS = (f"{pycoco_spice_models.JAR}.jar", f"{pycoco_spice_models.JAR}-models.jar")


class ResultsError(ValueError):
    """A results file (or in-memory results list) is missing or malformed; the message names it."""


@dataclass(frozen=True)
class GroundTruth:
    """Reference captions by image id, and where they came from (for messages and reports)."""

    references: dict[int, list[str]]
    source: str


# ---------------------------------------------------------------------------- ground truth


def load_annotations(path: str | Path) -> GroundTruth:
    """References of an official COCO captions file (`captions_val2014.json`), read with pycocotools.

    Images without any caption are left out: they cannot be scored. Images keep the file's order.
    """
    from pycocotools.coco import COCO  # noqa: PLC0415 - slow import, only needed here

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"COCO annotation file not found: {path}")
    try:
        # pycocotools prints progress lines; keep them off stdout, where reports go.
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError, AssertionError, KeyError, TypeError) as error:
        raise DatasetError(f"{path} is not a COCO annotation file ({error!r})") from error
    references = {}
    # In the file's image order, which is the order COCOEvalCap tokenizes in (see the docstring).
    for image_id in coco.getImgIds():
        captions = [annotation.get("caption") for annotation in coco.imgToAnns[image_id]]
        if not all(isinstance(caption, str) for caption in captions):
            raise DatasetError(
                f"{path} is not a COCO captions file: image {image_id} has annotations without a caption"
            )
        if captions:
            references[int(image_id)] = captions
    if not references:
        raise DatasetError(f"{path} holds no caption annotations")
    return GroundTruth(references, str(path))


def load_split_file(path: str | Path, split: str) -> GroundTruth:
    """References of one split of a Karpathy-style split file (`dataset_coco.json`, shapes data).

    Ids follow `captioner.data.coco.load_karpathy_split` (`cocoid` when present, else `imgid`),
    the ids our decoder writes in its results; `restval` joins `train`. Images keep the file's order.
    """
    records = load_karpathy_split(path, "", split)
    return GroundTruth({record.image_id: list(record.captions) for record in records}, f"{path} (split {split})")


# ---------------------------------------------------------------------------- results


def load_results(path: str | Path, ground_truth: GroundTruth) -> dict[int, str]:
    """Captions {image_id: caption} of a COCO results file, validated against `ground_truth`.

    Raises ResultsError naming the file when it is missing, not JSON, or not a list of
    {"image_id": int, "caption": str} with unique known ids and non-empty captions.
    """
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results file not found: {path}")
    try:
        data = json.loads(path.read_bytes())
    except json.JSONDecodeError as error:
        raise ResultsError(
            f"{path} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        ) from None
    except UnicodeDecodeError as error:
        raise ResultsError(f"{path} is not UTF-8 text ({error})") from None
    return check_results(data, ground_truth, str(path))


def check_results(results: list, ground_truth: GroundTruth, source: str) -> dict[int, str]:
    """The validation of `load_results` on results already in memory; `source` names them in errors."""
    if not isinstance(results, list):
        raise ResultsError(
            f"{source}: expected a JSON list of {{\"image_id\": int, \"caption\": str}}, got {type(results).__name__}"
        )
    if not results:
        raise ResultsError(f"{source}: the results list is empty")
    problems = [problem for index, entry in enumerate(results) if (problem := _entry_problem(index, entry))]
    if problems:
        raise ResultsError(
            f"{source}: results must be {{\"image_id\": int, \"caption\": str}} objects; "
            f"{len(problems)} entries are not: {'; '.join(problems[:_SHOWN])}"
        )
    captions: dict[int, str] = {}
    duplicates = []
    for entry in results:
        if entry["image_id"] in captions:
            duplicates.append(entry["image_id"])
        captions[entry["image_id"]] = entry["caption"]
    if duplicates:
        raise ResultsError(f"{source}: more than one caption for {_listed(sorted(set(duplicates)))} (one per image)")
    empty = sorted(image_id for image_id, caption in captions.items() if not caption.strip())
    if empty:
        raise ResultsError(f"{source}: empty captions for {_listed(empty)}")
    _check_known(captions, ground_truth, source)
    return captions


def _entry_problem(index: int, entry: object) -> str | None:
    """What is wrong with one results entry, or None."""
    if not isinstance(entry, dict):
        return f"entry {index} is a {type(entry).__name__}"
    image_id, caption = entry.get("image_id"), entry.get("caption")
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        return f"entry {index} has image_id {image_id!r}"
    if not isinstance(caption, str):
        return f"entry {index} (image {image_id}) has caption {caption!r}"
    return None


def _check_known(captions: Mapping[int, str], ground_truth: GroundTruth, source: str) -> None:
    """Raise ResultsError when some captioned images have no references."""
    unknown = sorted(image_id for image_id in captions if not ground_truth.references.get(image_id))
    if unknown:
        raise ResultsError(
            f"{source}: {len(unknown)} of {len(captions)} captioned images are not in the ground truth "
            f"{ground_truth.source}: {_listed(unknown)}"
        )


def _listed(image_ids: Sequence[int]) -> str:
    """'image ids 1, 2, 3' with at most _SHOWN ids, and how many more there are."""
    shown = ", ".join(str(image_id) for image_id in image_ids[:_SHOWN])
    more = f" and {len(image_ids) - _SHOWN} more" if len(image_ids) > _SHOWN else ""
    return f"image id{'s' if len(image_ids) > 1 else ''} {shown}{more}"


# ---------------------------------------------------------------------------- evaluation


def evaluate_captions(
    ground_truth: GroundTruth, results: Mapping[int, str], java: bool | None = None
) -> dict:
    """COCO caption metrics of `results` (image id → caption) on the images it captions.

    `java`: None uses Java when `java` is on PATH, True requires it, False forces the Python
    fallback (see the module docstring). Returns {"metrics": {name: corpus score}, "per_image":
    {image_id: {name: score}}, "num_images", "tokenizer", "notes": [str], "versions": {...},
    "seconds_by_stage": {stage: wall seconds}}; stages overlap (METEOR runs beside the Python
    scorers), so they do not add up to "total".
    """
    started = time.perf_counter()
    java_path = _find_java(java)
    if not results:
        raise ResultsError("no results to evaluate")
    _check_known(results, ground_truth, "results")
    # Ground-truth order, as COCOEvalCap's (see the module docstring).
    image_ids = [image_id for image_id in ground_truth.references if image_id in results]
    references = {image_id: list(ground_truth.references[image_id]) for image_id in image_ids}
    candidates = {image_id: results[image_id] for image_id in image_ids}
    timings: dict[str, float] = {}
    notes = [] if java_path else [(
        "METEOR and SPICE omitted and captions tokenized in Python, because Java is "
        f"{'not used (java=False / --no-java)' if java is False else 'not available'}; "
        "BLEU, ROUGE-L and CIDEr are close to, but not exactly, the official COCO figures"
    )]
    if java_path:
        scores, java_version = _score_with_java(references, candidates, java_path, timings, notes)
    else:
        gts, res = _timed(timings, "tokenize", _tokenize, references, candidates, None)
        scores, java_version = _python_scores(gts, res, timings), None
    timings["total"] = time.perf_counter() - started
    return _report(image_ids, scores, java_path, java_version, notes, timings)


def _find_java(java: bool | None) -> str | None:
    """Path of the `java` to run, or None for the Python fallback."""
    if java is False:
        return None
    found = shutil.which("java")
    if java and not found:
        raise RuntimeError(
            "java=True but no `java` on PATH: install a Java runtime (apt-get install default-jre-headless)"
        )
    return found


def _score_with_java(
    references: dict[int, list[str]],
    candidates: dict[int, str],
    java: str,
    timings: dict[str, float],
    notes: list[str],
) -> tuple[dict[str, tuple], str | None]:
    """(scores, Java version): PTB tokens, then METEOR in a thread beside BLEU/ROUGE-L/CIDEr, then SPICE.

    The "METEOR" stage time includes waiting for its JVM to finish loading.
    """
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="captioner-coco-eval-")))
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=2))
        # METEOR's JVM starts first: loading its paraphrase table takes seconds and overlaps the
        # rest. It is entered last so that, on an error, it is stopped before the pool waits for
        # the thread reading from it.
        meteor = stack.enter_context(_MeteorProcess(java, workdir))
        version = pool.submit(_java_version, java)
        gts, res = _timed(timings, "tokenize", _tokenize, references, candidates, java)
        meteor_scores = pool.submit(_timed, timings, "METEOR", meteor.score, gts, res)
        scores = _python_scores(gts, res, timings)
        scores["METEOR"] = meteor_scores.result()
        meteor.close()  # frees its 2 GB heap before SPICE asks for 8
        _add_spice(scores, gts, res, java, workdir, timings, notes)
        return scores, version.result()


def _add_spice(
    scores: dict[str, tuple],
    gts: dict,
    res: dict,
    java: str,
    workdir: Path,
    timings: dict[str, float],
    notes: list[str],
) -> None:
    """SPICE into `scores` when its CoreNLP jars are present, else one line in `notes` saying why not."""
    missing = _missing_spice_jars()
    if missing:
        notes.append(
            f"SPICE skipped: it needs the Stanford CoreNLP jars {', '.join(missing)} in {_SPICE_LIB}, "
            "which pycocoevalcap downloads (not possible offline); copy them there to get SPICE"
        )
        return
    try:
        scores["SPICE"] = _timed(timings, "SPICE", _spice, gts, res, java, workdir)
    except (RuntimeError, OSError, ValueError, KeyError) as error:
        # SPICE needs 8 GB for its JVM and is the first to fail; the other figures still stand.
        notes.append(f"SPICE failed and is omitted: {str(error)[-500:]}")


def _timed(timings: dict[str, float], stage: str, function: Callable, *args, **kwargs):
    """function(*args, **kwargs), recording its wall time under `stage`."""
    started = time.perf_counter()
    try:
        return function(*args, **kwargs)
    finally:
        timings[stage] = time.perf_counter() - started


def _python_scores(gts: dict, res: dict, timings: dict[str, float]) -> dict[str, tuple]:
    """{metric: (corpus score, per-image scores in gts order)} from pycocoevalcap's Python scorers."""
    bleu, bleu_images = _timed(timings, "Bleu", Bleu(4).compute_score, gts, res, verbose=0)
    scores = {f"Bleu_{n + 1}": (bleu[n], bleu_images[n]) for n in range(4)}
    scores["ROUGE_L"] = _timed(timings, "ROUGE_L", Rouge().compute_score, gts, res)
    scores["CIDEr"] = _timed(timings, "CIDEr", Cider().compute_score, gts, res)
    return scores


def _report(
    image_ids: list[int],
    scores: dict[str, tuple],
    java: str | None,
    java_version: str | None,
    notes: list[str],
    timings: dict[str, float],
) -> dict:
    """The report dict of `evaluate_captions` from {metric: (corpus, per-image list)}."""
    names = [name for name in METRICS if name in scores]
    return {
        "metrics": {name: float(scores[name][0]) for name in names},
        "per_image": {
            image_id: {name: float(scores[name][1][row]) for name in names}
            for row, image_id in enumerate(image_ids)
        },
        "num_images": len(image_ids),
        "tokenizer": JAVA_TOKENIZER if java else PYTHON_TOKENIZER,
        "notes": notes,
        "versions": {
            "pycocoevalcap": _package_version("pycocoevalcap"),
            "pycocotools": _package_version("pycocotools"),
            "java": java_version,
        },
        "seconds_by_stage": {stage: round(seconds, 3) for stage, seconds in timings.items()},
    }


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _java_version(java: str) -> str | None:
    """'17.0.15' from `java -version`, or None when it cannot be read."""
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "([^"]+)"', done.stderr + done.stdout)
    return match.group(1) if match else None


# ---------------------------------------------------------------------------- tokenizing


def _tokenize(
    references: dict[int, list[str]], candidates: dict[int, str], java: str | None
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """(gts, res) in pycocoevalcap's scorer format: {image_id: [space-joined tokens, ...]}.

    With Java, references and candidates are two PTB tokenizer runs, as in COCOEvalCap, made at
    the same time; without, `captioner.vocab.tokenize`.
    """
    reference_sentences = [caption for captions in references.values() for caption in captions]
    candidate_sentences = list(candidates.values())
    if java:
        with ThreadPoolExecutor(max_workers=1) as pool:
            reference_run = pool.submit(ptb_tokenize, reference_sentences, java)
            candidate_tokens = ptb_tokenize(candidate_sentences, java)
            reference_tokens = iter(reference_run.result())
    else:
        reference_tokens = iter([" ".join(tokenize(sentence)) for sentence in reference_sentences])
        candidate_tokens = [" ".join(tokenize(sentence)) for sentence in candidate_sentences]
    gts = {image_id: [next(reference_tokens) for _ in captions] for image_id, captions in references.items()}
    res = {image_id: [tokens] for image_id, tokens in zip(candidates, candidate_tokens)}
    return gts, res


def ptb_tokenize(sentences: Sequence[str], java: str = "java") -> list[str]:
    """`sentences` tokenized as one call of pycocoevalcap's PTBTokenizer.tokenize would give them.

    Same jar, class, arguments and punctuation list, and one caption per line in the order given
    (which matters: see the module docstring); the input file goes to a private temporary folder
    instead of the package folder.
    """
    with tempfile.TemporaryDirectory(prefix="captioner-ptb-") as workdir:
        source = Path(workdir) / "captions.txt"
        source.write_bytes("\n".join(sentence.translate(_LINE_BREAKS) for sentence in sentences).encode())
        done = subprocess.run(
            [java, "-cp", str(_PTB_JAR), *_PTB_COMMAND, source.name],
            cwd=workdir, capture_output=True, check=False,
        )
    if done.returncode:
        raise RuntimeError(f"the PTB tokenizer (Java) failed with exit code {done.returncode}: {_tail(done.stderr)}")
    lines = done.stdout.decode().split("\n")
    if len(lines) < len(sentences) or any(lines[len(sentences):]):
        raise RuntimeError(f"the PTB tokenizer returned {len(lines)} lines for {len(sentences)} captions")
    return [
        " ".join(word for word in line.rstrip().split(" ") if word not in _PUNCTUATION)
        for line in lines[: len(sentences)]
    ]


def _tail(stderr: bytes, limit: int = 2000) -> str:
    return stderr.decode(errors="replace").strip()[-limit:] or "(no error output)"


# ---------------------------------------------------------------------------- METEOR


class _MeteorProcess:
    """pycocoevalcap's METEOR 1.5 with the command and line protocol of its Meteor class.

    Differences that do not change a score: the process is stopped on exit instead of on
    garbage collection, its stderr goes to a file in `workdir` (a pipe nobody reads could fill
    up and stall it) and is quoted when it dies, and request lines are written from a thread so
    the JVM never waits for a round trip.
    """

    def __init__(self, java: str, workdir: Path):
        self._stderr = open(workdir / "meteor.stderr", "w+b")  # noqa: SIM115 - closed in close()
        try:
            self._process = subprocess.Popen(
                [java, *_METEOR_COMMAND], cwd=_METEOR_DIR,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            )
        except OSError:
            self._stderr.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop the JVM; closing twice is harmless."""
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        self._process.kill()
        self._process.wait()
        self._process.stdout.close()
        self._stderr.close()

    def score(self, gts: dict[int, list[str]], res: dict[int, list[str]]) -> tuple[float, list[float]]:
        """(corpus METEOR, per-image METEOR in gts order), as Meteor.compute_score returns them."""
        stats = self._exchange([_meteor_score_line(res[i][0], gts[i]) for i in gts], len(gts))
        values = self._exchange(["EVAL" + "".join(f" ||| {stat}" for stat in stats)], len(gts) + 1)
        return float(values[-1]), [float(value) for value in values[:-1]]

    def _exchange(self, lines: list[str], replies: int) -> list[str]:
        """Send `lines`, read `replies` reply lines."""
        failure: list[BaseException] = []
        writer = threading.Thread(target=self._write, args=(lines, failure), daemon=True)
        writer.start()
        answers = []
        for _ in range(replies):
            answer = self._process.stdout.readline().decode().strip()
            if not answer:
                break
            answers.append(answer)
        writer.join()
        if len(answers) < replies or failure:
            self._stderr.seek(0)
            raise RuntimeError(f"METEOR (Java) stopped answering: {_tail(self._stderr.read())}")
        return answers

    def _write(self, lines: list[str], failure: list[BaseException]) -> None:
        try:
            for line in lines:
                self._process.stdin.write(f"{line}\n".encode())
            self._process.stdin.flush()
        except OSError as error:  # the JVM died; the reader reports it with its stderr
            failure.append(error)


def _meteor_score_line(hypothesis: str, references: list[str]) -> str:
    """'SCORE ||| ref 1 ||| ... ||| ref n ||| hypothesis', cleaned as Meteor._stat cleans it."""
    hypothesis = hypothesis.replace("|||", "").replace("  ", " ")
    return " ||| ".join(("SCORE", " ||| ".join(references), hypothesis))


# ---------------------------------------------------------------------------- SPICE


def _missing_spice_jars() -> list[str]:
    """The CoreNLP jars SPICE needs that are not in pycocoevalcap's spice/lib folder."""
    return [name for name in _SPICE_JARS if not (_SPICE_LIB / name).is_file()]


def _spice(gts: dict, res: dict, java: str, workdir: Path) -> tuple[float, list[float]]:
    """(mean SPICE F-score, per-image F-scores in gts order), as pycocoevalcap's Spice computes them.

    Its input and output files go to `workdir`; its parse cache (an LMDB folder in the package,
    which only saves time) is not used, so nothing is written into the package.
    """
    input_data = [{"image_id": i, "test": res[i][0], "refs": gts[i]} for i in sorted(gts)]
    in_file, out_file = workdir / "spice_in.json", workdir / "spice_out.json"
    in_file.write_text(json.dumps(input_data, indent=2))
    command = [java, "-jar", "-Xmx8G", pycoco_spice.SPICE_JAR, str(in_file),
               "-out", str(out_file), "-subset", "-silent"]
    done = subprocess.run(command, cwd=_SPICE_DIR, capture_output=True, check=False)
    if done.returncode:
        raise RuntimeError(f"exit code {done.returncode}: {_tail(done.stderr)}")
    items = json.loads(out_file.read_text())
    f_scores = {item["image_id"]: _float_or_nan(item["scores"]["All"]["f"]) for item in items}
    per_image = [f_scores[image_id] for image_id in gts]
    return sum(per_image) / len(per_image), per_image


def _float_or_nan(value: object) -> float:
    """Spice.float_convert: a number, or NaN for SPICE's nulls."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------------- output


def format_table(report: dict) -> str:
    """The report's corpus metrics as a table (value and ×100, as papers print them), then notes."""
    lines = [
        f"COCO caption metrics on {report['num_images']} images (tokenizer: {report['tokenizer']})",
        f"{'metric':<10} {'value':>8} {'x100':>7}",
    ]
    lines += [f"{name:<10} {value:>8.4f} {value * 100:>7.1f}" for name, value in report["metrics"].items()]
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)
