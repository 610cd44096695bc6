"""The in-domain grader gold set (primary care, MTS-Dialog): its labels ship in goldsets/grader.primary-care.labels.csv,
its dialogues stay in the corpus and are filled in when the gold set is built.

    .venv/bin/python goldsets/primary_care.py build [--corpus PATH] [--out FILE]
    .venv/bin/python goldsets/primary_care.py draft --samples runs/cpu-table-dpo/dpo_samples.jsonl --out DRAFT.csv

`build` reads the labels, segments the corpus as the trainer does (stop rule `advice`), and writes a grader gold set
(context, target_info, candidate, content_score, format_score) to --out: a row's context is the dialogue before its
cut, and a candidate marked `expert` is the expert's own next question there. A label naming a cut the corpus does not
have is an error naming its row. `draft` picks cut points for labelling from training sessions only (never one a
shipped config holds out) where the policy's own sampled answers exist, and writes a sheet to label (an `expert` row
shows the question it scores; `build` reads it from the corpus again, so the labels file keeps that cell empty).
Data: MTS-Dialog (Ben Abacha et al., EACL 2023; CC BY 4.0), read from ../shared/data, never copied here."""

import argparse
import csv
import io
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibrator.expert_logs.logs import Sample, render  # noqa: E402
from calibrator.prompt import write_atomic  # noqa: E402
from train.data import expert_move, question_target  # noqa: E402  # read decision and future, which a Sample has

CORPUS = ROOT.parent / "shared/data/mts-dialog/Main-Dataset/MTS-Dialog-TrainingSet.csv"
LABELS = ROOT / "goldsets/grader.primary-care.labels.csv"
LABEL_COLUMNS = ("id", "cut", "candidate_source", "candidate", "target_info", "content_score", "format_score", "annotator", "note")
SOURCES = ("expert", "policy", "written", "paraphrase")  # the expert's own question is read from the corpus
STOP_RULE = "advice"  # where MTS-Dialog's asking ends (train/configs/cpu-learn.yaml)
CONTEXT_TURNS = 8  # the dialogue shown before the cut: the grader reads the recent turns, not a whole consultation
HELD_OUT = ("cpu-learn.yaml", "cpu-table.yaml")  # the shipped MTS-Dialog configs: sessions they evaluate on are never labelled


def cut_points(corpus: Path) -> dict[str, Sample]:
    from calibrator.corpora import read_corpus
    from calibrator.expert_logs.logs import segment_all

    return {s.id: s for s in segment_all(read_corpus(corpus).sessions, STOP_RULE)}


def held_out_sessions(corpus: Path) -> set[str]:
    """Sessions any shipped MTS-Dialog config evaluates on when it reads `corpus`, found as the trainer finds them
    (train.data: its segmentation, then its split), so none is labelled."""
    from contextlib import redirect_stdout

    from calibrator.expert_logs.samples_file import TrainingSample
    from train import data
    from train.config import CONFIGS, load_config

    held = set()
    for name in HELD_OUT:
        config = load_config(CONFIGS / name, logs=corpus)
        with redirect_stdout(io.StringIO()):  # its summary line, printed for a training run
            samples = [TrainingSample(**s.model_dump(), target_info=[]) for s in data.segment_logs(config)]
        held |= {s.session_id for s in data.split(samples, config.eval_fraction, config.seed, config.content)[1]}
    return held


def build(labels: Path, corpus: Path, targets: str = "labels") -> str:
    """targets: `labels`, the labellers' `field: value` items; `expert_question`, the doctor's next question itself
    (train.data.question_target), the target a `targets: expert_question` run grades against. The labels are the same:
    the labellers scored against the doctor's next run, which both forms name; but an `expert` row's candidate is then
    its own target, an easy row for any judge (goldsets/README.md gives the agreement without them)."""
    samples = cut_points(corpus)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "context", "target_info", "candidate", "content_score", "format_score", "annotator", "note"])
    problems = []
    with labels.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if missing := [c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]:
            raise SystemExit(f"{labels}: missing column(s) {', '.join(missing)}; the columns are {', '.join(LABEL_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            if row["candidate_source"] not in SOURCES:
                problems.append(f"{labels}, row {line}, column 'candidate_source': {row['candidate_source']!r} is not one "
                                f"of {', '.join(SOURCES)}")
                continue
            sample = samples.get(row["cut"])
            if sample is None:
                problems.append(f"{labels}, row {line}, column 'cut': {row['cut']!r} is not a cut point of {corpus}")
                continue
            candidate = row["candidate"]
            if row["candidate_source"] == "expert":
                candidate = expert_move(sample) or ""
            if not candidate.strip():
                problems.append(f"{labels}, row {line}, column 'candidate': empty")
                continue
            target = row["target_info"] if targets == "labels" else "; ".join(question_target(sample))
            if not target.strip():
                problems.append(f"{labels}, row {line}, column 'cut': {row['cut']!r} has no {targets} target in {corpus}")
                continue
            writer.writerow([row["id"], render(sample.context[-CONTEXT_TURNS:]), target, candidate,
                             row["content_score"], row["format_score"], row["annotator"], row["note"]])
    if problems:
        raise SystemExit("\n".join(problems))
    return out.getvalue()


def draft(policy_samples: Path, corpus: Path, cuts: int, seed: int) -> str:
    """Continue cut points of training sessions where the policy's sampled answers are cached, drawn at random."""
    samples = cut_points(corpus)
    held = held_out_sessions(corpus)
    answers: dict[str, list[str]] = {}
    for line in policy_samples.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line torn by a killed run
            continue
        answers.setdefault(record["id"].split("#")[0], []).append(record["completion"])
    pool = sorted(i for i in answers if i in samples and samples[i].decision == "continue" and samples[i].session_id not in held)
    picked = random.Random(seed).sample(pool, min(cuts, len(pool)))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["cut", "context", "expert_next", *LABEL_COLUMNS[2:]])
    for cut in picked:
        s = samples[cut]
        context, future = render(s.context[-CONTEXT_TURNS:]), render(s.future[:4])
        writer.writerow([cut, context, future, "expert", expert_move(s), "", "", "", "", ""])  # shown, not kept
        writer.writerow([cut, "", "", "policy", answers[cut][0].strip(), "", "", "", "", ""])
        writer.writerow([cut, "", "", "written", "", "", "", "", "", ""])
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="write the gold set: the shipped labels with their dialogues from the corpus")
    b.add_argument("--labels", type=Path, default=LABELS)
    b.add_argument("--corpus", type=Path, default=CORPUS, help="MTS-Dialog's training set (default: ../shared/data)")
    b.add_argument("--out", type=Path, help="default: .cache/goldsets/grader.primary-care.csv "
                   "(grader.primary-care.question.csv with --targets expert_question)")
    b.add_argument("--targets", choices=("labels", "expert_question"), default="labels",
                   help="each row's target: the labellers' field: value items (default), or the doctor's next question "
                   "itself, as a `targets: expert_question` training run grades against")
    d = commands.add_parser("draft", help="a sheet of cut points to label, from training sessions only")
    d.add_argument("--samples", type=Path, required=True, help="the policy's cached samples (e.g. a DPO run's dpo_samples.jsonl)")
    d.add_argument("--corpus", type=Path, default=CORPUS)
    d.add_argument("--cuts", type=int, default=50)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not args.corpus.is_file():
        parser.error(f"{args.corpus}: no such file (pass --corpus: MTS-Dialog-TrainingSet.csv)")
    if args.command == "build":
        text = build(args.labels, args.corpus, args.targets)
        suffix = "" if args.targets == "labels" else ".question"
        args.out = args.out or ROOT / f".cache/goldsets/grader.primary-care{suffix}.csv"
    else:
        text = draft(args.samples, args.corpus, args.cuts, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, text)
    print(f"wrote {args.out} ({len(list(csv.reader(io.StringIO(text)))) - 1} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
