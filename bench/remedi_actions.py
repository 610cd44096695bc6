"""The hindsight split and the extractor checked against human action labels: ReMeDi's dev set (Yan et al., "ReMeDi:
Resources for Multi-domain, Multi-service, Medical Dialogues", SIGIR 2022), Chinese consultations whose every doctor
turn annotators labelled with actions (Inquire symptom, Recommend medicine, …).

    .venv/bin/python bench/remedi_actions.py [--data PATH] [--sessions N] [--lm SPEC] [--prompt PATH] [--seed 0] [--json PATH]

The labels are mapped as calibrator/corpora/remedi.py says (Inquire = continue; diagnose, recommend, inform, answer =
stop; chit-chat = no label). Neither the split's `asks` test nor the prompt was tuned on these labels, so this is an
external check. a) The split (no LM, every consultation): each labelled doctor turn that begins a sample, the rule's
decision against the label; the "advice" rule's dropped turns after its stop point count as `stop`. b) The extractor on
the labelled turns of N consultations (a seeded shuffle; --sessions 0 skips it): its decision, and whether the fields
it names are those the doctor asked about. Intervals resample consultations, not turns: one doctor's turns hang together.
"""

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibrator.corpora.remedi import AnnotatedSession, gold_stop_turn, read_annotated, turn_decision, turn_fields  # noqa: E402
from calibrator.agreement.items import split_item  # noqa: E402
from calibrator.expert_logs.logs import STOP_RULES, Decision, Sample, Session, StopRule, asks, render, segment  # noqa: E402
from calibrator.agreement.metrics import percentile_interval  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "remedi" / "dev_human_annotation.txt"
DEFAULT_PROMPT = ROOT / "prompts" / "extractor.primary-care.yaml"
DEFAULT_SESSIONS = 10  # 88 labelled turns with seed 0: 386 s on --lm local (4.4 s a call, 2 cores shared with training)
N_BOOT = 2000
DECISIONS: tuple[Decision, ...] = ("continue", "stop")


@dataclass(frozen=True)
class Share:
    """hits / total with a 95% CI from resampling consultations (nan when there is nothing to count)."""
    hits: float
    total: float
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        if not self.total:
            return "n/a (nothing to count)"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.hits:g}/{self.total:g})"


def session_share(units: Sequence[tuple[str, float, float]], seed: int, n_boot: int = N_BOOT) -> Share:
    """Share of (consultation, hits, count) units, the CI from resampling whole consultations with default_rng(seed)."""
    if not units:
        return Share(0, 0, math.nan, math.nan, math.nan)
    _, group = np.unique([u[0] for u in units], return_inverse=True)
    hits = np.bincount(group, weights=[u[1] for u in units])
    total = np.bincount(group, weights=[u[2] for u in units])
    idx = np.random.default_rng(seed).integers(0, hits.size, size=(n_boot, hits.size))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = hits[idx].sum(axis=1) / total[idx].sum(axis=1)
    boot = boot[np.isfinite(boot)]
    low, high = percentile_interval(boot, 0.95) if boot.size else (math.nan, math.nan)
    value = hits.sum() / total.sum() if total.sum() else math.nan
    return Share(float(hits.sum()), float(total.sum()), float(value), low, high)


@dataclass(frozen=True)
class Scored:
    """One labelled doctor turn that begins a sample: the human label and a prediction (None: the answer did not parse)."""
    session: str
    turn: int  # the doctor turn's index in its consultation
    gold: Decision
    predicted: Decision | None


@dataclass(frozen=True)
class DecisionScores:
    n: int
    accuracy: Share
    confusion: list[list[int]]  # rows: gold continue, stop; columns: predicted continue, stop, unparsed
    continue_recall: float
    stop_recall: float


def decision_scores(scored: Sequence[Scored], seed: int) -> DecisionScores:
    """Accuracy counts an unparsed answer as wrong, so failing to answer never looks better than a wrong answer."""
    confusion = [[sum(s.gold == g and s.predicted == p for s in scored) for p in (*DECISIONS, None)] for g in DECISIONS]
    recall = [row[i] / sum(row) if sum(row) else math.nan for i, row in enumerate(confusion)]
    accuracy = session_share([(s.session, float(s.gold == s.predicted), 1.0) for s in scored], seed)
    return DecisionScores(len(scored), accuracy, confusion, *recall)


def doctor_turn(sample: Sample) -> int:
    """The doctor turn a sample begins with: the number of doctor messages before it."""
    return sum(m.role == "assistant" for m in sample.context)


def split_decisions(session: Session, stop: StopRule) -> dict[int, Decision]:
    """The split's decision at each doctor turn that begins a sample. The "advice" rule drops the runs after its stop
    point; they count as `stop`, which is what the rule claims about them (the doctor is advising by then)."""
    kept = {doctor_turn(s): s.decision for s in segment(session, stop)}
    return {turn: kept.get(turn, "stop") for turn in map(doctor_turn, segment(session, "end"))}


def split_scored(sessions: Sequence[AnnotatedSession], stop: StopRule) -> list[Scored]:
    return [Scored(a.session.session_id, turn, gold, decision)
            for a in sessions for turn, decision in split_decisions(a.session, stop).items()
            if (gold := turn_decision(a.actions[turn])) is not None]


def asks_scored(sessions: Sequence[AnnotatedSession]) -> list[Scored]:
    """The rule's building block alone on the same turns: `continue` iff the doctor's turn asks (calibrator.expert_logs.logs.asks)."""
    out = []
    for a in sessions:
        doctor = [m.content for m in a.session.messages if m.role == "assistant"]
        out += [Scored(a.session.session_id, turn, gold, "continue" if asks(doctor[turn]) else "stop")
                for turn in split_decisions(a.session, "end") if (gold := turn_decision(a.actions[turn])) is not None]
    return out


@dataclass(frozen=True)
class StopScores:
    n: int  # consultations whose labels have a stop point
    exact: Share
    within_one: Share  # the rule's stop turn at most one doctor turn from the gold one
    no_stop: int  # of n: the rule found no stop point


def stop_scores(sessions: Sequence[AnnotatedSession], stop: StopRule, seed: int) -> StopScores:
    """Per consultation, the rule's stop turn against calibrator.corpora.remedi.gold_stop_turn."""
    pairs = []
    for a in sessions:
        gold = gold_stop_turn([turn_decision(t) for t in a.actions])
        if gold is not None:
            stops = [t for t, d in split_decisions(a.session, stop).items() if d == "stop"]
            pairs.append((a.session.session_id, gold, min(stops, default=None)))
    exact = session_share([(s, float(r == g), 1.0) for s, g, r in pairs], seed)
    near = session_share([(s, float(r is not None and abs(r - g) <= 1), 1.0) for s, g, r in pairs], seed)
    return StopScores(len(pairs), exact, near, sum(r is None for _, _, r in pairs))


def field_scores(turns: Sequence[tuple[str, set[str], list[str] | None]], seed: int) -> tuple[Share, Share]:
    """(field accuracy, field precision) over (consultation, gold fields, extracted items or None if unparsed) of the
    turns labelled `continue` with a mapped field. Accuracy: share of turns where some extracted item's field is a gold
    field (unparsed: wrong). Precision: share of extracted items whose field is a gold field (unparsed: no items)."""
    named = [(s, [split_item(i)[0] in gold for i in items or []]) for s, gold, items in turns]
    hit = [(s, float(any(right)), 1.0) for s, right in named]
    precise = [(s, float(sum(right)), float(len(right))) for s, right in named]
    return session_share(hit, seed), session_share(precise, seed)


def labelled_samples(a: AnnotatedSession) -> list[tuple[Sample, Decision, set[str]]]:
    """The consultation's samples whose doctor turn is labelled, with the label and the fields it asks about."""
    return [(s, gold, turn_fields(a.actions[doctor_turn(s)])) for s in segment(a.session, "end")
            if (gold := turn_decision(a.actions[doctor_turn(s)])) is not None]


def print_decisions(name: str, d: DecisionScores) -> None:
    (cc, cs, _), (sc, ss, _) = d.confusion
    print(f"{name:<18}{d.n:>5}  {d.accuracy!s:<34}{cc:>6}{cs:>6}{sc:>6}{ss:>6}{d.continue_recall:>10.3f}{d.stop_recall:>8.3f}")


def check_split(sessions: list[AnnotatedSession], seed: int) -> dict:
    scores = {f"split {stop!r}": decision_scores(split_scored(sessions, stop), seed) for stop in STOP_RULES}
    scores["asks(text) alone"] = decision_scores(asks_scored(sessions), seed)
    print(f"\na) The hindsight split vs the human labels, no LM, all {len(sessions)} consultations. Accuracy with a 95% CI "
          f"(bootstrap over consultations, {N_BOOT} replicates, seed {seed}); counts gold→predicted; recall per label.")
    print(f"{'':<18}{'n':>5}  {'accuracy [95% CI]':<34}{'c→c':>6}{'c→s':>6}{'s→c':>6}{'s→s':>6}{'recall: c':>10}{'s':>8}")
    for name, d in scores.items():
        print_decisions(name, d)
    d = scores["asks(text) alone"]
    print(f"(answering `stop` everywhere would score {sum(d.confusion[1]) / d.n:.3f}: the share of turns labelled stop)")
    stops = {stop: stop_scores(sessions, stop, seed) for stop in STOP_RULES}
    n = next(iter(stops.values())).n
    print(f"\nStop point per consultation, over the {n} whose labels have one (the first `stop` turn after the last "
          "`continue` turn):")
    print(f"{'rule':<10}{'exact turn [95% CI]':<36}{'within ±1 turn [95% CI]':<36}{'rule has none':>13}")
    for stop, s in stops.items():
        print(f"{stop:<10}{s.exact!s:<36}{s.within_one!s:<36}{s.no_stop:>13}")
    return {"decisions": {k: asdict(v) for k, v in scores.items()}, "stop_point": {k: asdict(v) for k, v in stops.items()}}


def check_extractor(sessions: list[AnnotatedSession], args: argparse.Namespace) -> dict:
    """Loads dspy and the LM only here, so part a) and the tests stay light."""
    import dspy
    from tqdm import tqdm

    from calibrator.components.extractor import EXTRACTOR
    from calibrator.lm import LMSpec, open_lm
    from calibrator.lm.adapter import CompactJSONAdapter
    from calibrator.prompt import load_prompt

    spec = LMSpec.parse(args.lm)
    chosen = [sessions[i] for i in np.random.default_rng(args.seed).permutation(len(sessions))[: args.sessions]]
    turns = [(a.session.session_id, *t) for a in chosen for t in labelled_samples(a)]
    program = EXTRACTOR.build_program(load_prompt(args.prompt))
    print(f"\nb) The extractor ({args.prompt.relative_to(ROOT) if args.prompt.is_relative_to(ROOT) else args.prompt}, "
          f"--lm {spec}) on the {len(turns)} labelled turns of {len(chosen)} consultations (shuffle seed {args.seed}).")
    if spec.backend == "local":
        print("   Read with care: --lm local is SmolLM2-135M, a very small model trained mostly on English, and ReMeDi is "
              "Chinese.\n   These figures are a floor for this set-up, not a verdict on the prompt or on a capable model.")
    scored, fields, first_call = [], [], None
    started = time.perf_counter()
    with open_lm(spec, cache_dir=ROOT / ".cache") as lm, dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
        for session, sample, gold, gold_fields in tqdm(turns, unit="turn"):
            t = time.perf_counter()
            row = SimpleNamespace(id=sample.id, context=render(sample.context), future=render(sample.future))
            pred = EXTRACTOR.predict(program, row)
            first_call = time.perf_counter() - t if first_call is None else first_call
            scored.append(Scored(session, doctor_turn(sample), gold, pred.decision))
            if gold == "continue" and gold_fields:
                fields.append((session, gold_fields, pred.target_info if pred.decision else None))
        usage = lm.usage()
    elapsed = time.perf_counter() - started
    decisions = decision_scores(scored, args.seed)
    accuracy, precision = field_scores(fields, args.seed)
    (cc, cs, cu), (sc, ss, su) = decisions.confusion
    print(f"   {elapsed:.0f} s: {usage.lm_calls} LM calls ({elapsed / max(usage.lm_calls, 1):.1f} s each), {usage.cache_hits} "
          f"cache hits; the first call took {first_call or 0:.1f} s")
    print(f"   decision accuracy     {decisions.accuracy}  (unparsed answers count as wrong: {cu + su})")
    print(f"     gold→predicted: c→c {cc}, c→s {cs}, s→c {sc}, s→s {ss}; "
          f"continue recall {decisions.continue_recall:.3f}, stop recall {decisions.stop_recall:.3f}")
    print(f"   field accuracy        {accuracy}\n     over the {len(fields)} turns labelled continue whose Inquire "
          "slots map to a field: some extracted item's field (split_item, lowercased) is one of them; unparsed = wrong")
    print(f"   field precision       {precision}\n     the extracted items on those turns whose field is one the doctor "
          "asked about (an unparsed turn adds no items)")
    return {"sessions": [a.session.session_id for a in chosen], "turns": len(turns), "seconds": elapsed,
            "lm_calls": usage.lm_calls, "cache_hits": usage.cache_hits, "first_call_seconds": first_call,
            "decisions": asdict(decisions), "field_accuracy": asdict(accuracy), "field_precision": asdict(precision)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="ReMeDi file (default: ../shared/data/remedi/dev_human_annotation.txt)")
    parser.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS,
                        help=f"consultations for the extractor (default: {DEFAULT_SESSIONS}; 0 skips the extractor)")
    parser.add_argument("--lm", default="local", help="LM spec, as for python -m calibrator (default: local)")
    parser.add_argument("--prompt", type=Path, default=DEFAULT_PROMPT,
                        help="extractor prompt (default: prompts/extractor.primary-care.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="for the consultation shuffle and the bootstrap (default: 0)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    sessions, problems = read_annotated(args.data)
    for problem in problems:
        print(problem, file=sys.stderr)
    labels = [turn_decision(t) for a in sessions for t in a.actions]
    print(f"ReMeDi (Yan et al., SIGIR 2022), {args.data.name}: {len(sessions)} consultations, {len(labels)} doctor turns; "
          f"{labels.count('continue')} labelled continue (Inquire), {labels.count('stop')} stop (Diagnosis, Recommend, "
          f"Inform, QuestionAnswering), {labels.count(None)} unlabelled (Chitchat, Other, none)")
    report = {"data": str(args.data), "consultations": len(sessions), "doctor_turns": len(labels),
              "labels": {"continue": labels.count("continue"), "stop": labels.count("stop"), "none": labels.count(None)},
              "split": check_split(sessions, args.seed)}
    if args.sessions:
        report["extractor"] = check_extractor(sessions, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
