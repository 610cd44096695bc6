"""Extractor recall of clinicians' checklist facts on real consultations (PriMock57).

    .venv/bin/python bench/primock57_extractor.py [--limit 2] [--lm SPEC] [--prompt PATH]

Each consultation with a checklist is segmented like any expert log (doctor = pharmacist role), the
extractor runs on every sample, and the items it returns over the whole consultation are compared
with the facts the clinicians listed (critical `c` and all). Checklist facts carry no field, so only
the value half of the matcher applies: a fact counts as recalled when some extracted item's value
reaches the matcher's token overlap with it (calibrator.agreement.items.VALUE_OVERLAP).
"""

import argparse
import sys
import time
from pathlib import Path

import dspy
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibrator.components.extractor import EXTRACTOR  # noqa: E402
from calibrator.components.extract import default_prompt, extract_one  # noqa: E402
from calibrator.corpora.primock57 import DEFAULT_ROOT, Consultation, Fact, load_consultations  # noqa: E402
from calibrator.agreement.items import VALUE_OVERLAP, normalise, split_item, value_overlap  # noqa: E402
from calibrator.lm import LMSpec, open_lm  # noqa: E402
from calibrator.lm.adapter import CompactJSONAdapter  # noqa: E402
from calibrator.expert_logs.logs import Message, Session, segment  # noqa: E402
from calibrator.prompt import load_prompt  # noqa: E402


def session_of(consultation: Consultation) -> Session:
    roles = {"doctor": "assistant", "patient": "user"}
    return Session(session_id=consultation.id, messages=[Message(role=roles[t.speaker], content=t.text) for t in consultation.turns])


def recalled(fact: Fact, values: list[str]) -> bool:
    target = normalise(fact.text)
    return any(value_overlap(target, v) >= VALUE_OVERLAP for v in values)


def recall(facts: list[Fact], values: list[str]) -> tuple[int, int, int, int]:
    critical = [f for f in facts if f.critical]
    return (sum(recalled(f, values) for f in critical), len(critical), sum(recalled(f, values) for f in facts), len(facts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="PriMock57 folder (default: ../shared/data/primock57)")
    parser.add_argument("--limit", type=int, default=2, help="consultations with a checklist to run (default: 2, about 8 minutes on 2 cores; 0 = all 20)")
    parser.add_argument("--lm", default="local", help="LM spec, as for python -m calibrator (default: local)")
    parser.add_argument("--prompt", type=Path, help="extractor prompt (default: prompts/extractor.calibrated.yaml if present, else prompts/extractor.yaml)")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache")
    args = parser.parse_args()

    prompt_path = args.prompt or default_prompt(ROOT)
    consultations, _ = load_consultations(args.root)
    consultations = [c for c in consultations if c.facts]
    consultations = consultations[: args.limit or None]
    program = EXTRACTOR.build_program(load_prompt(prompt_path))
    print(f"PriMock57: {len(consultations)} consultations with checklists; prompt {prompt_path.relative_to(ROOT)}; LM {args.lm}")
    print(f"{'consultation':<22}{'samples':>8}{'items':>7}{'critical':>12}{'all':>12}")
    totals = [0, 0, 0, 0]
    started = time.perf_counter()
    with open_lm(LMSpec.parse(args.lm), cache_dir=args.cache_dir) as lm, dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
        for consultation in consultations:
            samples = [s for s in segment(session_of(consultation)) if s.decision == "continue"]
            values = []
            for sample in tqdm(samples, desc=consultation.id, unit="sample", leave=False):
                values += [split_item(item)[1] for item in extract_one(program, sample).target_info]
            counts = recall(consultation.facts, values)
            totals = [a + b for a, b in zip(totals, counts)]
            print(f"{consultation.id:<22}{len(samples):>8}{len(values):>7}{counts[0]:>6}/{counts[1]:<5}{counts[2]:>6}/{counts[3]:<5}")
        usage = lm.usage()
    rate = lambda a, b: a / b if b else 0.0  # noqa: E731
    print(f"recall of critical facts {rate(totals[0], totals[1]):.3f} ({totals[0]}/{totals[1]}), "
          f"all facts {rate(totals[2], totals[3]):.3f} ({totals[2]}/{totals[3]})")
    print(f"{usage.lm_calls} LM calls, {usage.cache_hits} cache hits, {usage.prompt_tokens} prompt tokens, "
          f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
