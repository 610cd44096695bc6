"""The gate a grader must pass before its scores drive RL, wherever they are used: `train run`, `calibrator serve` and
the in-process reward callables run these same checks with the same messages.

Its calibration record must show held-out agreement whose CI clears `min_qwk` on enough rows, measured on the gold set
that is on disk now and with the LM that will grade: a figure measured on other labels or another LM says nothing about
the reward the policy gets. When the record shows a model-free floor agreeing better with people on val, that floor is
the content judge (`choose_content_source`) and its own held-out figures are the ones checked.
"""

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel


MIN_QWK = 0.4
MIN_HELDOUT = 20
Override = Literal["allow_below_gate", "accept_newer_goldset", "allow_uncalibrated"]


class GateError(Exception):
    pass


class GateCheck(BaseModel):
    """One condition of the gate as a record keeps it: the calibration's figure against what the gate requires."""

    check: Literal["heldout_qwk_ci_low", "heldout_rows", "goldset_version", "grader_lm"]
    figure: float | int | str | None
    threshold: float | int | str
    passed: bool
    overridden_by: Override | None = None


class GateRecord(BaseModel):
    """What the gate saw and let through; a refusal raises GateError instead."""

    grader_prompt: str
    calibrated: bool
    calibration_run: str | None = None
    checks: list[GateCheck] = []
    overrides: list[str] = []  # the switches that let a failed check through
    content_source: dict[str, Any] | None = None  # calibrator.components.grader.ContentSource: the judge these checks are of


class Wording(BaseModel):
    """How a refusal tells its caller what to change: `train run` names config keys and its flags, `serve` its flags, the
    in-process callables their keyword arguments. The checks and the rest of each message are the same for all."""

    doing: str  # what the judge is for: "train", "serve", "use"
    grader: str  # who grades: "the trainer", ...
    stronger: str  # how to grade with a stronger LM
    lm_fix: str  # how to grade with the LM the prompt was calibrated on, "{lm}" filled in
    scope_fix: str  # how to pick a prompt of the right target scope, "{scope}" filled in
    below: str  # how to let a judge below the quality checks through
    newer: str
    uncalibrated: str
    min_qwk: str  # the name of the qwk threshold
    min_heldout: str


TRAIN_WORDING = Wording(doing="train", grader="the trainer", stronger="on a stronger --lm and train with that --grader-lm",
                        lm_fix="train with --grader-lm {lm}",
                        scope_fix="set grader_prompt to a grader prompt for {scope} targets (e.g. prompts/grader.{scope}.yaml)",
                        below="set allow_below_gate in the config", newer="pass --accept-newer-goldset",
                        uncalibrated="pass --allow-uncalibrated", min_qwk="min_grader_qwk", min_heldout="min_grader_heldout")
SERVE_WORDING = Wording(doing="serve", grader="the service", stronger="on a stronger --lm and serve with that --lm",
                        lm_fix="serve with --lm {lm}",
                        scope_fix="pass --prompt with a grader prompt for {scope} targets (e.g. prompts/grader.{scope}.yaml)",
                        below="pass --allow-below-gate", newer="pass --accept-newer-goldset",
                        uncalibrated="pass --allow-uncalibrated", min_qwk="--min-qwk", min_heldout="--min-heldout")
CALLABLE_WORDING = Wording(doing="load the reward", grader="the reward", stronger="on a stronger LM and load the reward with that lm=",
                           lm_fix="load the reward with lm={lm!r}",
                           scope_fix="load it with grader_prompt= a grader prompt for {scope} targets (e.g. prompts/grader.{scope}.yaml)",
                           below="pass allow_below_gate=True", newer="pass accept_newer_goldset=True",
                           uncalibrated="pass allow_uncalibrated=True", min_qwk="min_qwk", min_heldout="min_heldout")


class GatePolicy(BaseModel):
    """What the gate requires and what it was told to let through."""

    min_qwk: float = MIN_QWK
    min_heldout: int = MIN_HELDOUT
    allow_below_gate: bool = False  # relaxes the two quality checks, never the gold-set and LM checks
    accept_newer_goldset: bool = False
    allow_uncalibrated: bool = False  # overrides every check, even a missing calibration record
    wording: Wording = SERVE_WORDING


def _figure(value: Any) -> str:
    return "none recorded" if value is None else f"{value:.2f}"


def _goldset_sha256(path: Path) -> tuple[str | None, str | None]:
    """The sha256 of the gold set on disk now, or why it cannot be read."""
    from calibrator.components.grader import GraderRow
    from calibrator.gold.goldset import GoldSetError, load_goldset

    try:
        return load_goldset(path, GraderRow).sha256, None
    except GoldSetError as e:
        extra = f" (and {len(e.problems) - 1} more problems)" if len(e.problems) > 1 else ""
        return None, f"{e.problems[0]}{extra}"


def _same_lm(calibration, spec) -> bool:
    """A local GGUF is the same LM when it is the same file's contents, wherever it now lies; any other LM when its
    spec is the same."""
    if spec.path and calibration.lm_weights:
        from calibrator.lm.local import file_fingerprint

        return file_fingerprint(Path(spec.path)) == calibration.lm_weights
    return calibration.lm == str(spec)


def check_gate(grader_prompt: Path, grader_lm: str, policy: GatePolicy, target_scope: str = "next") -> GateRecord:
    """Whether the grader prompt may drive RL when it grades with `grader_lm`; raises GateError naming every failed check
    and what would let it through."""
    from calibrator.components.grader import choose_content_source  # dspy: imported when a gate is checked, not by configs
    from calibrator.lm.spec import LMSpec, LMSpecError
    from calibrator.prompt import load_prompt

    w = policy.wording
    anyway = f"to {w.doing} with it anyway (recorded)"
    try:
        grader_lm = str(LMSpec.parse(grader_lm))
    except LMSpecError as e:
        raise GateError(f"grader_lm: {e}") from None
    prompt = load_prompt(grader_prompt)
    scope = prompt.target_scope or "next"
    if scope != target_scope:
        raise GateError(f"the grader prompt {grader_prompt} grades against target_scope {scope}, but the run's targets are "
                        f"target_scope {target_scope}: {w.scope_fix.format(scope=target_scope)}, or target_scope: {scope}")
    recalibrate = f"`python -m calibrator run --component grader --lm {grader_lm}`"
    calibration = prompt.calibration
    if calibration is None:
        if not policy.allow_uncalibrated:
            raise GateError(f"the grader prompt {grader_prompt} has no calibration record: calibrate it with {recalibrate}, "
                            f"or {w.uncalibrated} {anyway}")
        return GateRecord(grader_prompt=str(grader_prompt), calibrated=False, overrides=["allow_uncalibrated"])

    source = choose_content_source(calibration)
    floor = source.source != "lm"
    test = (calibration.floors[source.source].get("test") or {}) if floor else calibration.test
    qwk, ci, n = test.get("qwk"), test.get("qwk_ci") or [None, None], test.get("n")
    ci_low, rows = ci[0], "an unrecorded number of" if n is None else n
    disk_sha, unreadable = _goldset_sha256(Path(calibration.goldset_path))
    checks = [
        GateCheck(check="heldout_qwk_ci_low", figure=ci_low, threshold=policy.min_qwk,
                  passed=ci_low is not None and ci_low >= policy.min_qwk),
        GateCheck(check="heldout_rows", figure=n, threshold=policy.min_heldout, passed=n is not None and n >= policy.min_heldout),
        GateCheck(check="goldset_version", figure=disk_sha, threshold=calibration.goldset_sha256, passed=disk_sha == calibration.goldset_sha256),
        GateCheck(check="grader_lm", figure=f"none: floor {source.source}" if floor else calibration.lm, threshold=grader_lm,
                  passed=floor or _same_lm(calibration, LMSpec.parse(grader_lm))),
    ]
    relaxed_by = {"heldout_qwk_ci_low": "allow_below_gate" if policy.allow_below_gate else None,
                  "heldout_rows": "allow_below_gate" if policy.allow_below_gate else None,
                  "goldset_version": "accept_newer_goldset" if policy.accept_newer_goldset and disk_sha else None,
                  "grader_lm": None}
    reasons = {
        "heldout_qwk_ci_low": (
            (f"the content judge chosen on val is the model-free floor {source.source} ({source.reason}); its " if floor else "")
            + f"held-out qwk 95% CI lower bound {_figure(ci_low)} is under {w.min_qwk} {policy.min_qwk} "
            f"(qwk {_figure(qwk)}, CI [{_figure(ci[0])}, {_figure(ci[1])}] on {rows} rows): re-calibrate with {recalibrate} and a "
            f"larger --budget, or {w.stronger}, or add gold rows to narrow the CI; or "
            f"{w.below} {anyway}"),
        "heldout_rows": (
            f"the calibration was judged on {rows} held-out rows, fewer than {w.min_heldout} {policy.min_heldout}: add gold "
            f"rows (`python -m calibrator goldset add FILE --component grader`) and re-calibrate with {recalibrate}, or "
            f"{w.below} {anyway}"),
        "goldset_version": (
            f"the gold set {calibration.goldset_path} cannot be read ({unreadable}): restore it, or re-calibrate with {recalibrate}"
            if unreadable else
            f"the gold set {calibration.goldset_path} changed since the calibration (sha256 {disk_sha[:12]} on disk, "
            f"{calibration.goldset_sha256[:12]} recorded): re-calibrate with {recalibrate}, or {w.newer} to "
            f"{w.doing} with this calibration anyway (recorded)"),
        "grader_lm": (
            f"the prompt was calibrated on LM {calibration.lm} but {w.grader} grades with {grader_lm}"
            + (f" (the file at that path is no longer the one calibrated on: {calibration.lm_weights} recorded)"
               if calibration.lm == grader_lm else "")
            + f": re-calibrate with {recalibrate}, or {w.lm_fix.format(lm=calibration.lm)}"),
    }
    failed = []
    for check in checks:
        if check.passed:
            continue
        check.overridden_by = relaxed_by[check.check] or ("allow_uncalibrated" if policy.allow_uncalibrated else None)
        if check.overridden_by is None:
            failed.append(reasons[check.check])
    if failed:
        raise GateError(f"the grader prompt {grader_prompt} does not pass the gate:\n" + "\n".join(f"- {r}" for r in failed))
    overrides = sorted({c.overridden_by for c in checks if c.overridden_by})
    return GateRecord(grader_prompt=str(grader_prompt), calibrated=True, calibration_run=calibration.run_id,
                      checks=checks, overrides=overrides, content_source=source.model_dump())


def waived(record: GateRecord) -> str:
    """One line naming each failed check that a switch let through, for a warning."""
    return "; ".join(f"{c.check} {c.figure} vs {c.threshold} waived by {c.overridden_by}" for c in record.checks
                     if c.overridden_by) or "no calibration record, allowed by allow_uncalibrated"
