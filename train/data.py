"""Training samples: expert logs in any supported format (calibrator.corpora) segmented at the config's stop rule, their
targets extracted with the calibrated extractor when the run grades content (resumable; or, with `targets:
expert_question`, the expert's next question itself, no LM), then whole sessions split into
train and held-out eval deterministically, and shaped as policy prompts."""

import hashlib
import random
from pathlib import Path

from calibrator.expert_logs.samples_file import SamplesFileError, TrainingSample, read_samples
from calibrator.expert_logs.logs import QUESTION_SENTENCE, Message, Sample, render
from calibrator.prompt import write_atomic_lines
from calibrator.expert_logs.shards import Manifest, manifest_path
from train.config import TrainConfig
from calibrator.reward.terms import STOP_TAG


def segment_logs(config: TrainConfig) -> list[Sample]:
    """The log's first `limit` sessions cut into samples at the config's stop rule; LogError if none is usable."""
    from calibrator.corpora import read_corpus
    from calibrator.expert_logs.logs import LogError, segment_all

    read = read_corpus(config.logs)
    for problem in read.problems[:5]:
        print(f"warning: {problem}")
    if len(read.problems) > 5:
        print(f"warning: {len(read.problems) - 5} more problems in {config.logs}")
    sessions = read.sessions[: config.limit]
    samples = segment_all(sessions, config.stop_rule, config.context_cut)
    if not samples:
        raise LogError(f"{config.logs}: no usable sample in {len(sessions)} sessions ({read.skipped} skipped)")
    stops = sum(s.decision == "stop" for s in samples)
    print(f"{config.logs}: {len(sessions)} sessions, {len(samples)} samples ({stops} stop) at stop rule {config.stop_rule!r}"
          + (f", context cut {config.context_cut!r}" if config.context_cut != "history" else ""))
    return samples


def samples_from_logs(config: TrainConfig, out: Path) -> list[TrainingSample]:
    """Written to `out`. With `content`, the `calibrator extract` step runs in-process (resumable like the command: a
    record made by another extractor prompt or LM is re-extracted); without, no target is needed and none is extracted."""
    samples = segment_logs(config)
    if not config.content or config.targets == "expert_question":
        if not out.is_file():
            write_atomic_lines(out, (TrainingSample(**s.model_dump(), target_info=question_target(s) if config.content else [])
                                     .model_dump_json() + "\n" for s in samples))
        return read_samples(out)
    import dspy

    from calibrator.components.extract import default_prompt, extract_samples
    from calibrator.lm import CallPolicy, LMSpec, default_concurrency, open_lm
    from calibrator.lm.adapter import CompactJSONAdapter
    from calibrator.prompt import load_prompt

    prompt = load_prompt(config.extractor_prompt or default_prompt(target_scope=config.target_scope))
    if (prompt.target_scope or "next") != config.target_scope:
        raise SamplesFileError(f"the extractor prompt {config.extractor_prompt} extracts target_scope "
                               f"{prompt.target_scope or 'next'} targets, but the config says target_scope: "
                               f"{config.target_scope}: name an extractor prompt for {config.target_scope} targets")
    spec = LMSpec.parse(config.lm)
    policy = CallPolicy(concurrency=config.concurrency or default_concurrency(spec))
    with open_lm(spec, cache_dir=config.cache_dir, seed=config.seed, policy=policy) as handle, \
            dspy.context(lm=handle.lm, adapter=CompactJSONAdapter()):
        summary = extract_samples(samples, prompt, spec, out, show_progress=True, concurrency=handle.concurrency)
    print(f"extracted {summary.samples} samples into {out}: {summary.extracted} extracted now "
          f"({summary.reextracted} re-extracted: made by another prompt or LM), {summary.reused} from an earlier run")
    return read_samples(out)


def samples_file_notes(config: TrainConfig) -> list[str]:
    """A --samples file was cut from logs by `calibrator extract`; the config's stop_rule and limit, which cut --logs,
    do not apply to it. Refused when the manifest beside it names another stop rule than the config's, since
    `train eval --logs` would then cut test logs at a different stop point than training saw; notes otherwise."""
    assert config.samples is not None
    notes = []
    path = manifest_path(config.samples)
    if path.is_file():
        try:
            manifest = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
            cut = manifest.stop_rule
        except ValueError as e:
            raise SamplesFileError(f"{path}: not a manifest `calibrator extract` wrote ({e.__class__.__name__}: "
                                   f"{str(e).splitlines()[0]}); re-extract, or remove it to go without") from None
        if cut != config.stop_rule:
            raise SamplesFileError(
                f"{config.samples} was cut at stop rule {cut!r} (its manifest, {path.name}) but the config says "
                f"stop_rule: {config.stop_rule}: set stop_rule: {cut}, or re-extract with "
                f"`python -m calibrator extract --stop-rule {config.stop_rule}`")
        if manifest.context_cut != config.context_cut:
            raise SamplesFileError(
                f"{config.samples} was cut with context cut {manifest.context_cut!r} (its manifest, {path.name}) but the "
                f"config says context_cut: {config.context_cut}: set context_cut: {manifest.context_cut}, or re-extract "
                f"with `python -m calibrator extract --context-cut {config.context_cut}`")
    else:
        notes.append(f"{config.samples} has no manifest ({path.name}), so the stop rule it was cut at is unknown; the "
                     f"config's stop_rule ({config.stop_rule}) applies only to --logs and `train eval --logs`")
    if config.limit is not None:
        notes.append(f"limit {config.limit} reads the first sessions of --logs; it does not cut --samples {config.samples}")
    return notes


def check_target_scope(samples: list[TrainingSample], config: TrainConfig, source: Path | str) -> None:
    """Samples whose targets cover another scope than the config's would be graded against a rubric for targets they
    do not have; refused with the count. Samples that do not say (made before the option) are taken as the config's."""
    other = [s for s in samples if s.target_scope is not None and s.target_scope != config.target_scope]
    if other and config.content:
        raise SamplesFileError(f"{source}: {len(other)} of {len(samples)} samples have target_scope {other[0].target_scope} "
                               f"targets (first: {other[0].id}), but the config says target_scope: {config.target_scope}; "
                               f"set target_scope: {other[0].target_scope} (and a grader prompt for it), or re-extract")


def split(samples: list[TrainingSample], fraction: float, seed: int,
          content: bool = True) -> tuple[list[TrainingSample], list[TrainingSample]]:
    """Whole sessions go to one side, so no held-out dialogue was seen in training: sessions ranked by a hash
    of (seed, id), the first round(fraction * sessions) held out. When content is graded, continue samples with no
    target are dropped (there is nothing to grade a question against)."""
    kept = usable(samples, content)
    sessions = sorted({s.session_id for s in kept}, key=lambda sid: hashlib.sha256(f"{seed}:{sid}".encode()).hexdigest())
    held = set(sessions[: round(fraction * len(sessions))])
    return [s for s in kept if s.session_id not in held], [s for s in kept if s.session_id in held]


def usable(samples: list[TrainingSample], content: bool = True) -> list[TrainingSample]:
    """Samples a run can train or be evaluated on: extracted without error and, when content is graded, either a stop
    or a continue with a target to grade the question against."""
    return [s for s in samples if s.error is None and (s.decision == "stop" or s.target_info or not content)]


def rebalance(samples: list[TrainingSample], stop_share: float | None, seed: int) -> list[TrainingSample]:
    """Stop samples repeated (or continue samples, if stops are the majority) until stops make up stop_share of the
    rows, then shuffled: at a log's natural share (one stop per session) most GRPO groups teach only `continue`."""
    if stop_share is None:
        return samples
    stops = [s for s in samples if s.decision == "stop"]
    goes_on = [s for s in samples if s.decision == "continue"]
    if not stops or not goes_on:
        return samples
    rng = random.Random(seed)
    if len(stops) / len(samples) < stop_share:
        want = round(stop_share * len(goes_on) / (1 - stop_share))
        stops = stops * (want // len(stops)) + rng.sample(stops, want % len(stops))
    else:
        want = round((1 - stop_share) * len(stops) / stop_share)
        goes_on = goes_on * (want // len(goes_on)) + rng.sample(goes_on, want % len(goes_on))
    rows = stops + goes_on
    rng.shuffle(rows)
    return rows


def policy_messages(context: list[Message], instructions: str, context_turns: int | None = None) -> list[dict[str, str]]:
    """The chat the policy continues: its instructions, then the dialogue so far (patient = user), its last
    context_turns messages when set."""
    shown = context[-context_turns:] if context_turns else context
    return [{"role": "system", "content": instructions.strip()}, *({"role": m.role, "content": m.content} for m in shown)]


def expert_move(sample: Sample) -> str | None:
    """What the expert did, as the policy should say it: `<stop />` at the stop point, else their first question
    (a run often starts with an acknowledgement: `Okay. Any fever?`), else their first message; None when the sample
    does not show the expert's next turn (a reference sample whose remaining_chat text has no speaker labels)."""
    if sample.decision == "stop":
        return STOP_TAG
    run = [m.content for m in sample.future[: next((i for i, m in enumerate(sample.future) if m.role == "user"), None)]]
    question = next((q.group().strip() for text in run if (q := QUESTION_SENTENCE.search(text))), None)
    return question or (run[0] if run else None)


def question_target(sample: Sample) -> list[str]:
    """The model-free target (`targets: expert_question`): the question the expert asked next, as one `asked: ...` item;
    none at a stop, or where the expert's next turn is not shown."""
    if sample.decision == "stop":
        return []
    move = expert_move(sample)
    return [f"asked: {' '.join(move.split())}"] if move else []


def to_rows(samples: list[TrainingSample], instructions: str, context_turns: int | None = None) -> list[dict]:
    return [{"prompt": policy_messages(s.context, instructions, context_turns), "context": render(s.context),
             "target_info": "; ".join(s.target_info), "decision": s.decision, "id": s.id} for s in samples]


def warm_rows(samples: list[TrainingSample], instructions: str, context_turns: int | None = None,
              stop_share: float | None = None, seed: int = 0) -> list[dict]:
    """Prompt-completion rows for the warm start: the same prompt GRPO sees, the expert's move as the completion;
    resampled to the warm start's own stop share (None: the experts' share), not GRPO's."""
    shown = [s for s in samples if expert_move(s) is not None]
    return [{"prompt": policy_messages(s.context, instructions, context_turns),
             "completion": [{"role": "assistant", "content": expert_move(s)}]} for s in rebalance(shown, stop_share, seed)]
