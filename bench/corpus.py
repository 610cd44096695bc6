"""A generated RealMedConv-format corpus for the scale benches: pharmacist-patient sessions built from templates.

`template(i)` is one of `TEMPLATES` distinct dialogues (2 questions then advice: 2 continue samples and 1 stop each);
session i of a corpus uses template i % TEMPLATES under its own id, so a corpus of any size asks the LM only the
templates' questions (the call cache answers the rest) and the benches measure the pipeline, not the model.
"""

import json
from collections.abc import Iterator
from pathlib import Path

TEMPLATES = 250
COMPLAINTS = ["a dry cough", "a sore throat", "heartburn", "a headache", "hay fever", "a rash on my arm", "diarrhoea",
              "back pain", "an earache", "trouble sleeping"]
WHO = ["I have", "My son has", "My mother has", "My daughter has", "My husband has"]
QUESTIONS = [("How long has it been going on?", "About {d} days"), ("Any fever?", "{fever}"),
             ("Are you taking any other medicines?", "Only {med}"), ("Any allergies?", "{allergy}"),
             ("Is it worse at night?", "{night}")]
FILL = {"fever": ["No", "A little, 37.8", "Yes, 39 last night"], "med": ["vitamin D", "the pill", "ibuprofen", "my inhaler"],
        "allergy": ["Penicillin", "None that I know", "Peanuts"], "night": ["Yes, much worse", "No, the same", "A bit"]}
ADVICE = ["Try an over-the-counter remedy and see your GP if it lasts a week.", "Rest, drink fluids, and come back if it gets worse.",
          "I'd suggest paracetamol; see a doctor if the fever rises."]


def template(i: int) -> list[dict[str, str]]:
    complaint, who = COMPLAINTS[i % len(COMPLAINTS)], WHO[(i // len(COMPLAINTS)) % len(WHO)]
    first, second = QUESTIONS[i % len(QUESTIONS)], QUESTIONS[(i // 3 + 1 + i) % len(QUESTIONS)]
    if second == first:
        second = QUESTIONS[(QUESTIONS.index(first) + 1) % len(QUESTIONS)]
    values = {k: v[i % len(v)] for k, v in FILL.items()} | {"d": str(2 + i % 13)}
    return [{"role": "user", "content": f"{who} {complaint}. Day {1 + i // 50} of it."},
            {"role": "assistant", "content": first[0]}, {"role": "user", "content": first[1].format(**values)},
            {"role": "assistant", "content": second[0]}, {"role": "user", "content": second[1].format(**values)},
            {"role": "assistant", "content": ADVICE[i % len(ADVICE)]}]


def sessions(n: int, templates: list[int] | None = None) -> Iterator[dict]:
    """n sessions; session i uses template i % TEMPLATES, or the (i mod len)-th of `templates` when given."""
    for i in range(n):
        yield {"session_id": f"b{i:07d}", "messages": template(templates[i % len(templates)] if templates else i % TEMPLATES)}


def write(path: Path, n: int, templates: list[int] | None = None) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for session in sessions(n, templates):
            f.write(json.dumps(session) + "\n")
    return path
