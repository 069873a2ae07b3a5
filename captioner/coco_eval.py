"""COCO caption evaluation that reports the numbers papers report.

What is official. Papers score captions with the COCO caption evaluation code, published as
`pycocoevalcap`: every reference and candidate caption is tokenized by Stanford CoreNLP's
PTBTokenizer (Java, lower-cased, one caption per line) and stripped of pycocoevalcap's punctuation
list; then pycocoevalcap's scorers give BLEU-1..4, METEOR 1.5 (Java), ROUGE-L and CIDEr (its
"CIDEr" is CIDEr-D: Gaussian length penalty, clipped counts, document frequencies from the
references of the scored images). This module runs exactly that: the tokenizer, METEOR and
SPICE as pycocoevalcap runs them (`captioner.coco_java`, which also says why not through
pycocoevalcap's own classes), and pycocoevalcap's own BLEU, ROUGE-L and CIDEr classes, on the
images present in the results only (the Karpathy test split is a subset of val2014). SPICE runs
only when the Stanford CoreNLP 3.6.0 jars it needs are already in pycocoevalcap's spice/lib
folder: pycocoevalcap would download them, which cannot happen offline, so otherwise the report
says SPICE was skipped. METEOR's JVM starts first so that loading its paraphrase table (the
slowest step) overlaps tokenizing and the pure-Python scorers, then scores in a thread beside
them.

Which references. COCOEvalCap scores against an official captions file (`captions_val2014.json`):
each image's captions as pycocotools reads them. A split of a Karpathy split file is scored the
same way, against the captions file of the folder holding its images, matched by image id
(`cocoid`); the split file's own `raw` sentences are used only when no captions file covers the
split, and the report's `references` and `notes` say which were used and why.

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
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from captioner import coco_java
from captioner.data.coco import DatasetError, ImageRecord, captions_file, load_karpathy_split
from captioner.vocab import tokenize

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
JAVA_TOKENIZER = "PTBTokenizer (Stanford CoreNLP 3.4.1, Java; the official COCO tokenization)"
PYTHON_TOKENIZER = (
    "python (approximate; install Java for the exact COCO figures: apt-get install default-jre-headless)"
)
# What a GroundTruth's references are (its `kind`, written into reports).
COCO_CAPTIONS = "coco-captions"  # an official captions file, read as COCOEvalCap reads it
SPLIT_FILE_RAW = "split-file-raw"  # the `raw` sentences of a Karpathy split file
IN_MEMORY = "in-memory"  # references the caller built
FOLDER_METADATA = "folder-metadata"  # the captions of an image folder's metadata.jsonl / .csv
# How many offending ids or entries an error message lists.
_SHOWN = 5


class ResultsError(ValueError):
    """A results file (or in-memory results list) is missing or malformed; the message names it."""


@dataclass(frozen=True)
class GroundTruth:
    """Reference captions by image id, and where they came from (for messages and reports).

    `kind` is COCO_CAPTIONS, SPLIT_FILE_RAW, FOLDER_METADATA or IN_MEMORY; `note` says why a
    split is scored against its split file's sentences rather than an official captions file.
    """

    references: dict[int, list[str]]
    source: str
    kind: str = IN_MEMORY
    note: str | None = None

    def describe(self) -> dict[str, str]:
        """{"source": ..., "kind": ...} for reports."""
        return {"source": self.source, "kind": self.kind}


# ---------------------------------------------------------------------------- ground truth


def load_annotations(path: str | Path, root: str | Path | None = None) -> GroundTruth:
    """References of an official COCO captions file (`captions_val2014.json`), read with pycocotools.

    Each image's references are its captions in `COCO.imgToAnns`, as COCOEvalCap reads them.
    Images without any caption are left out: they cannot be scored. Images keep the file's order.
    The source is the path relative to `root` when given (reports name no machine's folders).
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
    return GroundTruth(references, str(path) if root is None else _shown_path(path, root), COCO_CAPTIONS)


def load_split_file(path: str | Path, split: str, root: str | Path | None = None) -> GroundTruth:
    """The references COCOEvalCap scores one split of a Karpathy-style split file against.

    `root` is the COCO folder (annotations/, val2014/, ...), by default the split file's folder.
    Ids follow `captioner.data.coco.load_karpathy_split` (`cocoid` when present, else `imgid`),
    the ids our decoder writes in its results; `restval` joins `train`. See `split_references`.
    """
    path = Path(path)
    root = path.parent if root is None else Path(root)
    return split_references(load_karpathy_split(path, root, split), root, path)


def split_references(records: Sequence[ImageRecord], root: str | Path, split_file: str | Path) -> GroundTruth:
    """The references COCOEvalCap scores `records`, a split of `split_file` read under `root`, against.

    They are the official captions file of the folder holding the records' images (val2014/ →
    annotations/captions_val2014.json under `root`), read as `load_annotations` reads it, for the
    records' image ids (`cocoid`), in that file's order. Only when no such file covers every
    record are the split file's `raw` sentences used; the result's `kind` says which, and its
    `note` why. Sources are relative to `root`.
    """
    root = Path(root)
    official, why_not = _official_references(records, root)
    if official is not None:
        return official
    raw = {record.image_id: list(record.captions) for record in records}
    return GroundTruth(raw, _shown_path(Path(split_file), root), SPLIT_FILE_RAW, why_not)


def _official_references(records: Sequence[ImageRecord], root: Path) -> tuple[GroundTruth | None, str | None]:
    """(references of `records` from their folder's captions file, None) or (None, why there are none)."""
    folders = sorted({record.path.parent for record in records})
    if len(folders) > 1:
        names = ", ".join(folder.name for folder in folders)
        return None, (f"the split's images lie in {len(folders)} folders ({names}), and COCOEvalCap scores "
                      "against one captions file")
    if folders[0].parent != root:
        return None, "the split file names no COCO image folder (`filepath`, e.g. val2014) for the split's images"
    path = captions_file(root, folders[0].name)
    if not path.is_file():
        return None, f"{_shown_path(path, root)} not found"
    annotations = load_annotations(path, root)
    missing = [record.image_id for record in records if record.image_id not in annotations.references]
    if missing:
        return None, (f"{annotations.source} has no captions for {len(missing)} of the split's {len(records)} "
                      f"images ({_listed(missing)})")
    wanted = {record.image_id for record in records}
    references = {image_id: refs for image_id, refs in annotations.references.items() if image_id in wanted}
    return GroundTruth(references, annotations.source, COCO_CAPTIONS), None


def _shown_path(path: Path, root: str | Path) -> str:
    """`path` relative to `root` when it lies inside, else its file name: reports name no machine's folders."""
    try:
        return path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return path.name


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
    {image_id: {name: score}}, "num_images", "references": {"source", "kind"} of `ground_truth`,
    "tokenizer", "notes": [str], "versions": {...}, "seconds_by_stage": {stage: wall seconds}};
    stages overlap (METEOR runs beside the Python scorers), so they do not add up to "total".
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
    notes = [f"scored against the raw sentences of {ground_truth.source}, not an official captions file: "
             f"{ground_truth.note}"] if ground_truth.note else []
    if not java_path:
        notes.append(
            "METEOR and SPICE omitted and captions tokenized in Python, because Java is "
            f"{'not used (java=False / --no-java)' if java is False else 'not available'}; "
            "BLEU, ROUGE-L and CIDEr are close to, but not exactly, the official COCO figures"
        )
    if java_path:
        scores, java_version = _score_with_java(references, candidates, java_path, timings, notes)
    else:
        gts, res = _timed(timings, "tokenize", _tokenize, references, candidates, None)
        scores, java_version = _python_scores(gts, res, timings), None
    timings["total"] = time.perf_counter() - started
    return _report(image_ids, ground_truth, scores, java_path, java_version, notes, timings)


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
        meteor = stack.enter_context(coco_java.MeteorProcess(java, workdir))
        version = pool.submit(coco_java.java_version, java)
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
    missing = coco_java.missing_spice_jars()
    if missing:
        notes.append(
            f"SPICE skipped: it needs the Stanford CoreNLP jars {', '.join(missing)} in {coco_java.SPICE_LIB}, "
            "which pycocoevalcap downloads (not possible offline); copy them there to get SPICE"
        )
        return
    try:
        scores["SPICE"] = _timed(timings, "SPICE", coco_java.spice, gts, res, java, workdir)
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
    ground_truth: GroundTruth,
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
        "references": ground_truth.describe(),
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
            reference_run = pool.submit(coco_java.ptb_tokenize, reference_sentences, java)
            candidate_tokens = coco_java.ptb_tokenize(candidate_sentences, java)
            reference_tokens = iter(reference_run.result())
    else:
        reference_tokens = iter([" ".join(tokenize(sentence)) for sentence in reference_sentences])
        candidate_tokens = [" ".join(tokenize(sentence)) for sentence in candidate_sentences]
    gts = {image_id: [next(reference_tokens) for _ in captions] for image_id, captions in references.items()}
    res = {image_id: [tokens] for image_id, tokens in zip(candidates, candidate_tokens)}
    return gts, res


# ---------------------------------------------------------------------------- output


def format_table(report: dict) -> str:
    """The report's corpus metrics as a table (value and ×100, as papers print them), then notes."""
    lines = [f"COCO caption metrics on {report['num_images']} images (tokenizer: {report['tokenizer']})"]
    if "references" in report:
        lines.append(f"references: {report['references']['source']} ({report['references']['kind']})")
    lines.append(f"{'metric':<10} {'value':>8} {'x100':>7}")
    lines += [f"{name:<10} {value:>8.4f} {value * 100:>7.1f}" for name, value in report["metrics"].items()]
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)
