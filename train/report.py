"""eval.html: the base vs trained comparison as one self-contained page in the calibration report's style (its CSS,
read from calibrator/report, inlined). No script and no external resource; every text from a log, a model or a
record is escaped."""

from html import escape
from importlib.resources import files
from typing import Any

from calibrator.expert_logs.samples_file import TrainingSample
from calibrator.expert_logs.logs import render
from train.evaluate import GraderAgreement, MetricComparison, SampleScore, figure

GRADED = ("good_question_rate", "mean_content", "good_question_rate_if_correct", "mean_content_if_correct")  # the metrics that rest on the grader's agreement with humans
EXTRA_CSS = """body { max-width: 110rem; }
td.text { text-align: left; white-space: pre-wrap; max-width: 26rem; overflow-wrap: anywhere; }
td.improved { background: #eef3ee; } td.worse { background: #fbeeee; }
tr.differs td, tr.differs th { background: #fff6d6; } .mark { color: #b36b00; font-weight: 600; }"""


def render_eval(result: dict[str, Any], samples: list[TrainingSample]) -> str:
    css = files("calibrator.report").joinpath("templates/style.css").read_text(encoding="utf-8")
    grader = GraderAgreement.model_validate(result["grader"])
    warning = grader.warning()
    banner = f"<p class='banner' role='alert'>{escape(warning)}</p>" if warning else ""
    return ("<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'><title>policy eval: base vs trained</title>"
            f"<style>{css}\n{EXTRA_CSS}</style></head><body>"
            "<h1>Base vs trained policy on held-out samples</h1>"
            f"<p>{escape(result['note'])}</p>{banner}"
            f"{_metrics_table([MetricComparison.model_validate(c) for c in result['comparison']], grader)}"
            f"{_sampled_table(result.get('sampled'), grader)}"
            f"{_corrected(result.get('corrected'), grader)}"
            f"{_samples_table(result, samples)}</body></html>\n")


def _corrected(corrected: dict[str, Any] | None, grader: GraderAgreement) -> str:
    """The content figures corrected by the humans' labels on reviewed rollouts, or a plain statement that they are not."""
    if not grader.used:
        return ""
    if not corrected:
        return ("<h2>Content figures and the judge</h2><p>The content figures above are the judge's, uncorrected: no rollout "
                f"of this run has been labelled by a person (<code>train eval --review N</code>). {escape(grader.summary())}.</p>")
    rows = []
    for side, metrics in corrected["figures"].items():
        for metric, f in metrics.items():
            rough = "" if f["enough_labels"] else " <span class='mark'>(under 30 labels)</span>"
            rows.append(f"<tr><th scope='row'>{escape(metric)}</th><td>{escape(side)}</td><td>{f['judge']:.2f}</td>"
                        f"<td>{f['corrected']:.2f} [{f['ci'][0]:.2f}, {f['ci'][1]:.2f}]{rough}</td><td>{f['labelled']}</td></tr>")
    for metric, d in (corrected.get("differences") or {}).items():
        rows.append(f"<tr><th scope='row'>{escape(metric)}</th><td>trained − base</td><td></td>"
                    f"<td>{d['delta']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]: {escape(d['verdict'])}</td><td></td></tr>")
    seed = "not recorded" if corrected["seed_qwk"] is None else f"{corrected['seed_qwk']:.2f}"
    policy = "–" if corrected["policy_qwk"] is None else f"{corrected['policy_qwk']:.2f}"
    return ("<h2>Content figures corrected by human labels</h2><table><caption>Over the "
            f"{escape(corrected['source'])} rollouts: the judge's rate, and the rate corrected by people's blind labels on a "
            "random sample of them (prediction-powered inference), with its 95% interval.</caption>"
            f"<thead><tr>{_headers('metric', 'side', 'judge', 'corrected [CI]', 'labelled')}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table><p>The judge's agreement with people on the policy's outputs: qwk "
            f"{policy}, exact {corrected['policy_agreement']:.2f} on {sum(corrected['labelled'].values())} rows; on the seed "
            f"gold set (held out): qwk {seed}. A gap between the two is drift: the policy writes text unlike what the judge "
            "was checked on.</p>")


def _sampled_table(sampled: dict[str, Any] | None, grader: GraderAgreement) -> str:
    """The reference's evaluation: its metrics, under its names, over the sampled rollouts."""
    if not sampled:
        return ""
    names = sampled["reference_names"]
    comparison = [MetricComparison.model_validate(c) for c in sampled["comparison"] if c["name"] in names]
    return (f"<h2>The reference's evaluation</h2><p>{escape(sampled['note'])}: every rollout scored with the same "
            "reward; a wrong decision scores content 0; \"if correct\" counts only the rollouts whose decision was right.</p>"
            + _metrics_table(comparison, grader, names, heading=False))


def _metrics_table(comparison: list[MetricComparison], grader: GraderAgreement, names: dict[str, str] | None = None,
                   heading: bool = True) -> str:
    rows = []
    for c in comparison:
        about = ""
        if c.name in GRADED:
            mark = "" if grader.established else "<span class='mark'>not established: </span>"
            about = f"<br><span class='ci'>{mark}{escape(grader.summary())}</span>"
        name = (names or {}).get(c.name, c.name)
        rows.append(f"<tr><th scope='row'>{escape(name)}{about}</th><td>{c.n}</td><td>{c.sessions}</td>"
                    f"<td>{figure(c.base, c.base_ci)}</td><td>{figure(c.trained, c.trained_ci)}</td>"
                    f"<td>{figure(c.delta, c.delta_ci, '+')}</td>"
                    f"<td class='{c.verdict.replace(' ', '-')}'>{escape(c.verdict)}</td></tr>")
    return (("<h2>Metrics</h2>" if heading else "") + "<table><caption>Point value and 95% interval from a bootstrap over held-out sessions (all samples "
            "of each drawn session), the same draws for base and trained; Δ is trained − base.</caption>"
            f"<thead><tr>{_headers('metric', 'n', 'sessions', 'base [CI]', 'trained [CI]', 'Δ [CI]', 'verdict')}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _headers(*names: str) -> str:
    return "".join(f"<th scope='col'>{escape(n)}</th>" for n in names)


def _output(s: SampleScore) -> str:
    failed = " (grader failed)" if s.terms.grader_failed else ""
    p_stop = "" if s.p_stop is None else f", P(&lt;stop) {s.p_stop:.2f}"
    return (f"<td class='text'>{escape(s.completion)}<br><span class='ci'>→ {s.predicted}{p_stop}</span></td>"
            f"<td>{s.reward:.2f}{failed}</td>")


def _samples_table(result: dict[str, Any], samples: list[TrainingSample]) -> str:
    base = [SampleScore.model_validate(s) for s in result["scores"]["base"]]
    trained = [SampleScore.model_validate(s) for s in result["scores"]["trained"]]
    rows, differ = [], 0
    for sample, b, t in zip(samples, base, trained, strict=True):
        differs = b.predicted != t.predicted
        differ += differs
        mark = "<br><span class='mark' title='base and trained decide differently'>≠ decision</span>" if differs else ""
        cells = [escape(sample.session_id), sample.decision, escape("; ".join(sample.target_info)) or "–",
                 escape(render(sample.context[-2:]))]
        rows.append(f"<tr{' class=differs' if differs else ''}><th scope='row'>{escape(sample.id)}{mark}</th>"
                    + "".join(f"<td class='text'>{c}</td>" for c in cells) + _output(b) + _output(t) + "</tr>")
    headers = _headers("id", "session", "expert", "target info", "context", "base output", "base reward", "trained output",
                       "trained reward")
    return (f"<h2>Samples</h2><table><caption>{len(rows)} held-out samples; the {differ} where base and trained decide "
            f"differently are marked ≠ and shaded. Context: the last 2 turns.</caption><thead><tr>{headers}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")
