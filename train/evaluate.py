"""`python -m train eval`: the base and the trained policy on held-out samples, scored with the same reward.

Greedy decoding, one completion per sample. good_question_rate is the share of continue samples whose
question the grader scores content 1; termination_accuracy the share of stop samples answered `<stop />`.
"""

import html
import statistics
from pathlib import Path
from typing import Any

from calibrator.components.extract import TrainingSample
from calibrator.logs import render
from calibrator.parallel import map_ordered
from train.data import policy_messages
from calibrator.components.grader import FormatSourceName
from train.rewards import Grade, Terms, decision_of, fuse, score_terms


def generate(model_dir: Path, samples: list[TrainingSample], instructions: str, max_new_tokens: int) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    texts = []
    for sample in samples:
        ids = tokenizer.apply_chat_template(policy_messages(sample.context, instructions), add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        texts.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return texts


def metrics(samples: list[TrainingSample], completions: list[str], grade: Grade, fusion: str,
            format_source: FormatSourceName, concurrency: int = 1) -> dict[str, Any]:
    """concurrency: grader calls at once, as in the trainer's reward."""
    jobs = [(c, s.decision, render(s.context), "; ".join(s.target_info)) for s, c in zip(samples, completions)]
    terms: list[Terms] = map_ordered(lambda job: score_terms(*job, grade, format_source), jobs, concurrency=concurrency)
    cont = [(s, c, t) for s, c, t in zip(samples, completions, terms) if s.decision == "continue"]
    stop = [(s, c, t) for s, c, t in zip(samples, completions, terms) if s.decision == "stop"]

    def mean(values: list[float]) -> float | None:
        return statistics.fmean(values) if values else None

    return {
        "n": len(samples), "n_continue": len(cont), "n_stop": len(stop),
        "good_question_rate": mean([float(t.content == 1.0) for _, _, t in cont]),
        "mean_content": mean([t.content for _, _, t in cont]),
        "termination_accuracy": mean([float(decision_of(c) == "stop") for _, c, _ in stop]),
        "continue_accuracy": mean([float(decision_of(c) == "continue") for _, c, _ in cont]),
        "decision_accuracy": mean([float(decision_of(c) == s.decision) for s, c in zip(samples, completions)]),
        "mean_format": mean([t.format for t in terms]),
        "mean_reward": mean([fuse(t, fusion) for t in terms]),
        "grader_failures": sum(t.grader_failed for t in terms),
    }


def report_html(result: dict[str, Any]) -> str:
    names = [k for k in result["base"] if k not in ("completions",)]
    rows = "".join(f"<tr><th scope='row'>{html.escape(k)}</th>" + "".join(
        f"<td>{'–' if result[side][k] is None else (f'{result[side][k]:.3f}' if isinstance(result[side][k], float) else result[side][k])}</td>"
        for side in ("base", "trained")) + "</tr>" for k in names)
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>policy eval</title>"
            "<style>body{font:15px system-ui,sans-serif;margin:2rem}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}"
            "table{border-collapse:collapse}</style></head><body><h1>Base vs trained policy on held-out samples</h1>"
            f"<table><thead><tr><th>metric</th><th>base</th><th>trained</th></tr></thead><tbody>{rows}</tbody></table>"
            f"<p>{html.escape(result.get('note', ''))}</p></body></html>")
