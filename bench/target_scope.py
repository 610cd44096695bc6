"""Which target scope gives the content reward more signal, measured on human labels with no LM: ReMeDi's dev set,
whose every doctor turn annotators labelled with what it inquires about (`Inquire symptom 大便干燥`).

    .venv/bin/python bench/target_scope.py [--data PATH] [--seed 0] [--json PATH]

At each doctor turn that inquires (a `continue` cut), the target is the inquiries of that turn (`next`, ours) or of
that turn and every later one (`rest`: the reference's "what the rest of the dialogue reveals", approximated by what
the doctor went on to ask about, which is what the patient then revealed). A content judge that matched a candidate
question to the target perfectly would then score:
- the expert's **later** inquiries in the same consultation (good questions by the expert's own standard, asked in
  another order): the share scored on-target is the scope's tolerance of order (true positives);
- inquiries drawn from **other** consultations (questions about someone else's problem): the share scored on-target
  is the scope's leniency (false positives).
Matched on the annotated slot and value (`symptom: 大便干燥`: same slot, and one value contains the other) and, more
coarsely, on the slot alone. Youden's J (TPR - FPR) summarises the signal; intervals resample consultations.
"""

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibrator.corpora.remedi import AnnotatedSession, read_annotated  # noqa: E402
from calibrator.agreement.metrics import percentile_interval  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "remedi" / "dev_human_annotation.txt"
N_BOOT = 2000
Inquiry = tuple[str, str]  # (slot, value)


def inquiries(session: AnnotatedSession) -> list[list[Inquiry]]:
    """Per doctor turn, its (slot, value) inquiries; a bare `Inquire` (no slot) is left out: it names nothing to match."""
    return [[(a.slot, a.value.strip()) for a in actions if a.act == "Inquire" and a.slot] for actions in session.actions]


def on_target(candidate: Inquiry, target: set[Inquiry], by_value: bool) -> bool:
    slot, value = candidate
    return any(s == slot and (not by_value or (value and v and (value in v or v in value))) for s, v in target)


def measure(sessions: list[AnnotatedSession], seed: int) -> dict:
    rng = random.Random(seed)
    per_session = [inquiries(s) for s in sessions]
    pool = [(i, q) for i, turns in enumerate(per_session) for turn in turns for q in turn]
    # rows: (session index, scope, match, kind, hit)
    rows: list[tuple[int, str, str, str, bool]] = []
    for i, turns in enumerate(per_session):
        asking = [t for t, turn in enumerate(turns) if turn]
        for t in asking:
            targets = {"next": set(turns[t]), "rest": {q for turn in turns[t:] for q in turn}}
            later = [q for turn in turns[t + 1:] for q in turn if q not in turns[t]]
            others = [q for j, q in rng.sample(pool, min(len(pool), 3 * max(1, len(later)))) if j != i][:max(1, len(later))]
            for scope, target in targets.items():
                for match, by_value in (("slot+value", True), ("slot", False)):
                    rows += [(i, scope, match, "later", on_target(q, target, by_value)) for q in later]
                    rows += [(i, scope, match, "other", on_target(q, target, by_value)) for q in others]
    draws = np.random.default_rng(seed).integers(0, len(sessions), size=(N_BOOT, len(sessions)))
    weights = np.stack([np.bincount(d, minlength=len(sessions)) for d in draws])
    result: dict = {"sessions": len(sessions), "asking_turns": sum(1 for turns in per_session for turn in turns if turn)}
    for scope in ("next", "rest"):
        for match in ("slot+value", "slot"):
            rates, boots = {}, {}
            for kind in ("later", "other"):
                mine = [(i, hit) for i, s, m, k, hit in rows if (s, m, k) == (scope, match, kind)]
                idx = np.array([i for i, _ in mine])
                hits = np.array([h for _, h in mine], dtype=float)
                rates[kind] = (float(hits.mean()) if len(hits) else None, len(hits))
                num = weights @ np.bincount(idx, weights=hits, minlength=len(sessions))
                den = weights @ np.bincount(idx, minlength=len(sessions))
                boots[kind] = num[den > 0] / den[den > 0] if len(hits) else np.array([])
            kept = min(len(boots["later"]), len(boots["other"]))
            j = boots["later"][:kept] - boots["other"][:kept]
            result[f"{scope} / {match}"] = {
                "tpr_later": rates["later"][0], "n_later": rates["later"][1],
                "fpr_other": rates["other"][0], "n_other": rates["other"][1],
                "youden_j": None if rates["later"][0] is None else rates["later"][0] - rates["other"][0],
                "youden_j_ci": list(percentile_interval(j, 0.95)) if kept else None}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"ReMeDi's dev file (default: {DEFAULT_DATA})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"error: {args.data}: no such file (public data is read from ../shared/data)", file=sys.stderr)
        return 2
    sessions, problems = read_annotated(args.data)
    result = measure(sessions, args.seed)
    print(f"ReMeDi dev: {result['sessions']} consultations, {result['asking_turns']} inquiring doctor turns "
          f"({len(problems)} reader problems)")
    print(f"{'scope / match':22} {'TPR later':>16} {'FPR other':>16} {'J':>6}  95% CI")
    for key, r in result.items():
        if isinstance(r, dict):
            ci = r["youden_j_ci"]
            print(f"{key:22} {r['tpr_later']:>8.3f} (n={r['n_later']:>3}) {r['fpr_other']:>8.3f} (n={r['n_other']:>3}) "
                  f"{r['youden_j']:>6.3f}  [{ci[0]:.3f}, {ci[1]:.3f}]")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
