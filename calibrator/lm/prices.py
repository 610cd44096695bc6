"""What an API run cost, in USD: one price table, overridable with `--prices FILE`.

List prices move; these are the providers' published per-million-token prices for standard
(non-batch) requests as we last read them. A model that is not in the table has no estimate
(shown as unknown, never as free); `local` costs nothing.
"""

from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from calibrator.lm.usage import Usage


class Price(BaseModel):
    input: float  # USD per 1M prompt tokens
    output: float  # USD per 1M completion tokens


PRICES: dict[str, Price] = {
    "openai:gpt-4o-mini": Price(input=0.15, output=0.60),
    "openai:gpt-4o": Price(input=2.50, output=10.00),
    "openai:gpt-4.1-mini": Price(input=0.40, output=1.60),
    "openai:gpt-4.1": Price(input=2.00, output=8.00),
    "anthropic:claude-3-5-haiku-latest": Price(input=0.80, output=4.00),
    "anthropic:claude-sonnet-4-0": Price(input=3.00, output=15.00),
}


def load_prices(path: Path | None) -> dict[str, Price]:
    """The table, with a YAML/JSON file's entries (`openai:MODEL: {input: .., output: ..}`, keyed as --lm spells the
    model) on top."""
    table = dict(PRICES)
    if path is not None:
        with open(path, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ValueError(f"{path}: the YAML does not parse ({' '.join(str(e).split())})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of model -> {{input, output}} USD per 1M tokens")
        for model, price in data.items():
            if ":" not in str(model):  # it would never match: runs look prices up by the whole --lm spec
                raise ValueError(f"{path}: {model}: name the model as --lm spells it (openai:{model}, anthropic:{model}, "
                                 f"openai-compatible:{model}@URL)")
            try:
                table[str(model)] = Price.model_validate(price)
            except ValidationError as e:
                wrong = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'the entry'}: {err['msg']}" for err in e.errors())
                raise ValueError(f"{path}: {model}: expected {{input: .., output: ..}} USD per 1M tokens ({wrong})") from None
    return table


def estimate_usd(lm: str, usage: Usage, table: dict[str, Price]) -> float | None:
    if lm == "local" or lm.startswith("local:"):  # on this machine: no bill
        return 0.0
    price = table.get(lm)
    if price is None:
        return None
    return (usage.prompt_tokens * price.input + usage.completion_tokens * price.output) / 1e6
