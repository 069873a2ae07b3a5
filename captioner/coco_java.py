"""pycocoevalcap's Java tools, run privately: the PTB tokenizer, METEOR 1.5 and SPICE.

Each runs with the jar, Java class or command, arguments and line protocol that pycocoevalcap
uses, so the tokens and scores are the same; what differs is where their files go.
pycocoevalcap's PTBTokenizer, Meteor and Spice classes write temporary files into (and run
from) the installed package folder, which may be read-only and is shared by every evaluation
running at once. Here every tokenizer run gets a private temporary folder, METEOR and SPICE
write into a folder the caller gives, and the METEOR process is started and stopped
explicitly, so callers can overlap its slow start with other work (`captioner.coco_eval` does).

SPICE also needs the Stanford CoreNLP 3.6.0 jars in pycocoevalcap's spice/lib folder, which
pycocoevalcap would download on first use; `missing_spice_jars` says which are absent.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from pycocoevalcap.meteor import meteor as pycoco_meteor
from pycocoevalcap.spice import get_stanford_models as pycoco_spice_models
from pycocoevalcap.spice import spice as pycoco_spice
from pycocoevalcap.tokenizer import ptbtokenizer as pycoco_ptb

# pycocoevalcap's tokenizer: jar, Java class and arguments as in PTBTokenizer.tokenize.
PTB_JAR = Path(pycoco_ptb.__file__).parent / pycoco_ptb.STANFORD_CORENLP_3_4_1_JAR
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
SPICE_LIB = Path(pycoco_spice_models.SPICEDIR) / pycoco_spice_models.SPICELIB
_SPICE_JARS = (f"{pycoco_spice_models.JAR}.jar", f"{pycoco_spice_models.JAR}-models.jar")


def java_version(java: str) -> str | None:
    """'17.0.15' from `java -version`, or None when it cannot be read."""
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "([^"]+)"', done.stderr + done.stdout)
    return match.group(1) if match else None


def _tail(stderr: bytes, limit: int = 2000) -> str:
    return stderr.decode(errors="replace").strip()[-limit:] or "(no error output)"


# ---------------------------------------------------------------------------- PTB tokenizer


def ptb_tokenize(sentences: Sequence[str], java: str = "java") -> list[str]:
    """`sentences` tokenized as one call of pycocoevalcap's PTBTokenizer.tokenize would give them.

    Same jar, class, arguments and punctuation list, and one caption per line in the order given
    (which matters: the PTB lexer looks past the end of a line, so a caption's tokens can depend
    on the next one); the input file goes to a private temporary folder instead of the package
    folder.
    """
    with tempfile.TemporaryDirectory(prefix="captioner-ptb-") as workdir:
        source = Path(workdir) / "captions.txt"
        source.write_bytes("\n".join(sentence.translate(_LINE_BREAKS) for sentence in sentences).encode())
        done = subprocess.run(
            [java, "-cp", str(PTB_JAR), *_PTB_COMMAND, source.name],
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


# ---------------------------------------------------------------------------- METEOR


class MeteorProcess:
    """pycocoevalcap's METEOR 1.5 with the command and line protocol of its Meteor class.

    The JVM starts in the constructor (loading the paraphrase table takes seconds). Differences
    that do not change a score: the process is stopped on exit instead of on garbage collection,
    its stderr goes to a file in `workdir` (a pipe nobody reads could fill up and stall it) and
    is quoted when it dies, and request lines are written from a thread so the JVM never waits
    for a round trip.
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


def missing_spice_jars() -> list[str]:
    """The CoreNLP jars SPICE needs that are not in pycocoevalcap's spice/lib folder."""
    return [name for name in _SPICE_JARS if not (SPICE_LIB / name).is_file()]


def spice(gts: dict, res: dict, java: str, workdir: Path) -> tuple[float, list[float]]:
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
