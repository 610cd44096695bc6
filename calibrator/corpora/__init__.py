"""Public expert-dialogue corpora read as the project's own logs, so they can be segmented and used like any expert log:
one module per corpus, each with `detect(path)` and `read(path) -> LogRead`."""

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from calibrator.corpora import mts_dialog, primock57, remedi
from calibrator.expert_logs.logs import LogError, LogProblem, LogRead, LogStream, Session

FORMATS: dict[str, ModuleType] = {"primock57": primock57, "mts-dialog": mts_dialog, "remedi": remedi}
SUPPORTED = (
    "a PriMock57 folder (transcripts/*_doctor.TextGrid), an MTS-Dialog CSV (ID, dialogue), a ReMeDi file "
    "(<|context|> … <|response|> per line), or an expert log (RealMedConv JSONL, transcript CSV/JSONL)"
)


def detect_format(path: Path) -> str:
    """The corpus `path` holds, or "log" for the project's own formats (calibrator.expert_logs.logs says whether it is one)."""
    return next((name for name, module in FORMATS.items() if module.detect(path)), "log")


def read_corpus(path: Path) -> LogRead:
    """The sessions at `path` read whole, as `read_logs` does for the project's own formats; LogError if unusable."""
    stream = open_log(path)
    sessions = list(stream)
    return LogRead(sessions, stream.problems, stream.skipped)


class CorpusStream:
    """A corpus with LogStream's interface (`calibrator extract` iterates either): read whole when iterated, since a
    corpus's sessions are spread over its lines or files; `problems` and `skipped` fill in then."""

    streaming = False

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self.problems: list[LogProblem] = []
        self.skipped = 0

    def __iter__(self) -> Iterator[Session]:
        read = FORMATS[self.name].read(self.path)
        self.problems, self.skipped = read.problems, read.skipped
        yield from read.sessions


def open_log(path: Path) -> LogStream | CorpusStream:
    """The sessions at `path`, whatever its supported format; LogError if it is none of them."""
    if not path.exists():
        raise LogError(f"{path}: no such file or folder; supported: {SUPPORTED}")
    name = detect_format(path)
    if name != "log":
        return CorpusStream(path, name)
    if path.is_dir():
        raise LogError(f"{path}: a folder, but not a PriMock57 one; supported: {SUPPORTED}")
    return LogStream(path)
