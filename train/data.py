"""Training samples: read samples.jsonl, or extract them from logs with the calibrated extractor (resumable),
then split whole sessions into train and held-out eval deterministically, and shape them as policy prompts."""

import hashlib
from pathlib import Path

from calibrator.components.extract import TrainingSample
from calibrator.logs import Message, render


def read_samples(path: Path) -> list[TrainingSample]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [TrainingSample.model_validate_json(line) for line in lines if line.strip()]


def extract_from_logs(logs: Path, out: Path, extractor_prompt: Path | None, lm: str, cache_dir: Path, seed: int) -> list[TrainingSample]:
    """The `calibrator extract` step, run in-process into `out` (resumable like the command: a record made by
    another extractor prompt or LM is re-extracted)."""
    import dspy

    from calibrator.components.extract import default_prompt, extract_samples
    from calibrator.lm import LMSpec, open_lm
    from calibrator.lm.adapter import CompactJSONAdapter
    from calibrator.logs import LogError, read_logs, segment_all
    from calibrator.prompt import load_prompt

    prompt = load_prompt(extractor_prompt or default_prompt())
    read = read_logs(logs)
    if not read.sessions:
        raise LogError(f"{logs}: no usable session ({read.skipped} skipped)")
    spec = LMSpec.parse(lm)
    with open_lm(spec, cache_dir=cache_dir, seed=seed) as handle, dspy.context(lm=handle.lm, adapter=CompactJSONAdapter()):
        summary = extract_samples(segment_all(read.sessions), prompt, spec, out, show_progress=True,
                                  concurrency=handle.concurrency)
    print(f"extracted {summary.samples} samples into {out}: {summary.extracted} extracted now "
          f"({summary.reextracted} re-extracted: made by another prompt or LM), {summary.reused} from an earlier run")
    return read_samples(out)


def split(samples: list[TrainingSample], fraction: float, seed: int) -> tuple[list[TrainingSample], list[TrainingSample]]:
    """Whole sessions go to one side, so no held-out dialogue was seen in training: sessions ranked by a hash
    of (seed, id), the first round(fraction * sessions) held out. Continue samples with no target are dropped."""
    usable = [s for s in samples if s.error is None and (s.decision == "stop" or s.target_info)]
    sessions = sorted({s.session_id for s in usable}, key=lambda sid: hashlib.sha256(f"{seed}:{sid}".encode()).hexdigest())
    held = set(sessions[: round(fraction * len(sessions))])
    return [s for s in usable if s.session_id not in held], [s for s in usable if s.session_id in held]


def policy_messages(context: list[Message], instructions: str) -> list[dict[str, str]]:
    """The chat the policy continues: its instructions, then the dialogue so far (patient = user)."""
    return [{"role": "system", "content": instructions.strip()}, *({"role": m.role, "content": m.content} for m in context)]


def to_rows(samples: list[TrainingSample], instructions: str) -> list[dict]:
    return [{"prompt": policy_messages(s.context, instructions), "context": render(s.context),
             "target_info": "; ".join(s.target_info), "decision": s.decision, "id": s.id} for s in samples]
