"""What the trainer's tests share: training samples, a small samples file, a calibration record, and a shipped
config copied with its out in the test's folder."""

from pathlib import Path

import yaml

from calibrator.expert_logs.samples_file import TrainingSample
from calibrator.expert_logs.logs import Message
from calibrator.prompt import Calibration
from train.config import CONFIGS


def sample(sid: str, k: int, decision: str, items: list[str] | None = None, context: str = "hi") -> TrainingSample:
    """Sample k of session sid; a continue sample asks for `duration: x` unless `items` says otherwise."""
    items = (["duration: x"] if decision == "continue" else []) if items is None else items
    return TrainingSample(id=f"{sid}_{k}", session_id=sid, context=[Message(role="user", content=context)],
                          future=[Message(role="assistant", content="?")], target_info=items, decision=decision)


def small_samples(path: Path) -> Path:
    """Six pharmacy sessions cut after each patient turn: three continue samples with their targets and a stop."""
    turns = [("user", "Hi, I need something for a dry cough."), ("assistant", "Who is it for?"), ("user", "Me, I'm 40."),
             ("assistant", "How long have you had it?"), ("user", "About a week."), ("assistant", "Any other medicines?"),
             ("user", "No, nothing."), ("assistant", "<med_search>")]
    messages = [Message(role=r, content=c) for r, c in turns]
    targets = [["age group: adult, 40"], ["duration: about a week"], ["current medication: none"], []]
    samples = [TrainingSample(id=f"{sid}_{k}", session_id=sid, context=messages[:cut], future=messages[cut:],
                              target_info=targets[k], decision="stop" if k == 3 else "continue")
               for sid in "abcdef" for k, cut in enumerate((1, 3, 5, 7))]
    path.write_text("".join(s.model_dump_json() + "\n" for s in samples))
    return path


def calibration(**fields) -> Calibration:
    """A calibration record with placeholder provenance; `fields` set what the test is about (val, test, verdict...)."""
    return Calibration.model_validate({"run_id": "r", "created": "2026-11-24T00:00:00Z", "optimizer": "auto:knn", "lm": "local",
                                       "seed": 0, "goldset_path": "g", "goldset_sha256": "x", "val": {}, "test": {},
                                       "verdict": "no significant change"} | fields)


def copy_config(name: str, tmp_path: Path, **changes) -> Path:
    """A shipped config with its out in tmp_path (and any other top-level changes), written beside it."""
    data = yaml.safe_load((CONFIGS / name).read_text()) | {"out": str(tmp_path / "out")} | changes
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
