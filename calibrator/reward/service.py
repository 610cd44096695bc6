"""`calibrator serve`: the reward over HTTP, a thin layer on RewardFunction.score (aiohttp's server).

- `POST /get_reward`: OpenRLHF's remote reward protocol as is (`--remote_rm_url http://HOST:PORT/get_reward`).
  `query[i]` is the prompt followed by the policy's response, `prompts[i]` that prompt, so the candidate is what follows
  the prompt in the query (end-of-sequence tokens dropped). `labels[i]` is the target: a JSON object (or its text)
  `{"decision": "continue"|"stop", "target_info": ["field: value", ...], "context": "patient: ...\\npharmacist: ..."}`;
  without `context` the judge reads the prompt as the dialogue. Answer: `{"rewards": [...], "scores": [...],
  "extra_logs": {"stop": [...], "content": [...], "format": [...], "grader_failed": [...]}}`.
- `POST /grade`: the typed request (calibrator.reward.schema.GradeRequest): context, target, candidates -> each
  candidate's terms and fused reward, the fusion and the judge.
- `GET /health`, `GET /judge`: the gate's outcome, warnings, what grades and how well it agreed with people.

A request is graded whole or not at all: malformed JSON, a missing or mistyped field, an empty list, lists of unequal
length and an oversized body are answered 4xx naming the field, before any grading; the server goes on serving."""

import asyncio
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from calibrator.reward.functions import RewardFunction
from calibrator.reward.schema import Case, GradeRequest, GradeResponse, Target, context_text
from calibrator.reward.terms import without_end_tokens

REWARD = web.AppKey("reward", RewardFunction)
STATE = web.AppKey("state", dict)


class FieldError(Exception):
    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(message)
        self.field, self.status = field, status


def _pydantic_field(e: ValidationError, prefix: str = "") -> tuple[str, str]:
    """The first error's field as a path (`target.decision`, `labels[2].target_info`) and pydantic's message."""
    first = e.errors()[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
    where = ".".join(part for part in (prefix, loc) if part).replace(".[", "[")
    return where or "body", first["msg"]


async def _body(request: web.Request) -> Any:
    limit = request.app[STATE]["max_body"]
    if request.content_length is not None and request.content_length > limit:
        raise FieldError("body", f"the request body is {request.content_length} bytes, over the limit of {limit} (--max-body-mb)", 413)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise FieldError("body", f"the request body is over the limit of {limit} bytes (--max-body-mb)", 413) from None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FieldError("body", f"not JSON: {e}", 400) from None


def _strings(body: dict, name: str) -> list[str]:
    if name not in body:
        raise FieldError(name, f"{name} is missing")
    value = body[name]
    if not isinstance(value, list):
        raise FieldError(name, f"{name} must be a list of strings, got {type(value).__name__}")
    if not value:
        raise FieldError(name, f"{name} is empty: nothing to grade")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise FieldError(f"{name}[{i}]", f"{name}[{i}] must be a string, got {type(item).__name__}")
    return value


def response_of(query: str, prompt: str, where: str) -> str:
    """What the policy wrote: the query after its prompt, end-of-sequence and padding tokens dropped."""
    at = query.rfind(prompt) if prompt else 0
    if at < 0:
        raise FieldError(where, f"{where}: the query does not contain its prompt (prompts{where[5:]}); OpenRLHF sends the "
                                "prompt followed by the response as the query")
    return without_end_tokens(query[at + len(prompt):])


def label_of(label: Any, where: str) -> tuple[Target, str | None]:
    if isinstance(label, str):
        try:
            label = json.loads(label)
        except json.JSONDecodeError as e:
            raise FieldError(where, f"{where}: not a JSON target ({e.msg}); give {{\"decision\": \"continue\"|\"stop\", "
                                    "\"target_info\": [\"field: value\", ...], \"context\": \"...\"}") from None
    if not isinstance(label, dict):
        raise FieldError(where, f"{where}: a target must be an object, got {type(label).__name__}")
    context = label.get("context")
    try:
        target = Target.model_validate({k: v for k, v in label.items() if k != "context"})
        text = None if context is None else context_text(context)
    except ValidationError as e:
        field, message = _pydantic_field(e, where)
        raise FieldError(field, f"{field}: {message}") from None
    return target, text


def openrlhf_cases(body: Any, max_batch: int) -> list[Case]:
    if not isinstance(body, dict):
        raise FieldError("body", f"the body must be an object with query, prompts and labels, got {type(body).__name__}")
    query, prompts = _strings(body, "query"), _strings(body, "prompts")
    if "labels" not in body:
        raise FieldError("labels", "labels is missing: each query's target, {\"decision\": ..., \"target_info\": [...]}")
    labels = body["labels"]
    if not isinstance(labels, list) or not labels:
        raise FieldError("labels", "labels must be a non-empty list, one target per query")
    if not len(query) == len(prompts) == len(labels):
        raise FieldError("labels" if len(query) == len(prompts) else "prompts",
                         f"query, prompts and labels must have one entry each per response: got {len(query)}, "
                         f"{len(prompts)} and {len(labels)}")
    if len(query) > max_batch:
        raise FieldError("query", f"{len(query)} responses in one request, over --max-batch {max_batch}", 413)
    cases = []
    for i, (q, p, label) in enumerate(zip(query, prompts, labels)):
        target, context = label_of(label, f"labels[{i}]")
        cases.append(Case(context=context if context is not None else p, target=target, candidate=response_of(q, p, f"query[{i}]")))
    return cases


async def _score(request: web.Request, cases: list[Case]):
    state = request.app[STATE]
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(state["pool"], request.app[REWARD].score, cases)


async def get_reward(request: web.Request) -> web.Response:
    cases = openrlhf_cases(await _body(request), request.app[STATE]["max_batch"])
    graded = await _score(request, cases)
    rewards = [g.reward for g in graded]
    extra = {name: [float(getattr(g.terms, name)) for g in graded] for name in ("stop", "content", "format", "grader_failed")}
    return web.json_response({"rewards": rewards, "scores": rewards, "extra_logs": extra})


async def grade(request: web.Request) -> web.Response:
    body = await _body(request)
    try:
        parsed = GradeRequest.model_validate(body)
    except ValidationError as e:
        field, message = _pydantic_field(e)
        raise FieldError(field, f"{field}: {message}") from None
    if len(parsed.candidates) > request.app[STATE]["max_batch"]:
        raise FieldError("candidates", f"{len(parsed.candidates)} candidates, over --max-batch {request.app[STATE]['max_batch']}", 413)
    graded = await _score(request, parsed.cases())
    reward = request.app[REWARD]
    answer = GradeResponse(fusion=reward.fusion, judge=reward.card.content_source["source"] if reward.card else "lm", graded=graded)
    return web.json_response(text=answer.model_dump_json())


def _warnings(app: web.Application) -> list[str]:
    state, reward = app[STATE], app[REWARD]
    out = []
    if reward.gate is not None and reward.gate.overrides:
        from calibrator.reward.gate import waived

        out.append(f"the judge does not pass the gate and is served anyway: {waived(reward.gate)}")
    if reward.card is not None and reward.card.note:
        out.append(reward.card.note)
    drift = state.get("drift")
    if drift is not None and drift.warning:
        out.append(drift.warning)
    return out


async def _refresh_drift(app: web.Application) -> None:
    """Measure the judge on the policy-output gold set again when that file changed since the last measurement."""
    state = app[STATE]
    path: Path | None = state.get("policy_goldset")
    if path is None or not path.is_file():
        return
    stamp = path.stat().st_mtime_ns
    if state.get("drift_stamp") == stamp:
        return
    loop = asyncio.get_running_loop()
    state["drift"] = await loop.run_in_executor(state["pool"], state["measure"], path)
    state["drift_stamp"] = stamp
    if state["drift"].warning:
        print(f"warning: {state['drift'].warning}", file=sys.stderr, flush=True)


async def health(request: web.Request) -> web.Response:
    await _refresh_drift(request.app)
    reward, warnings = request.app[REWARD], _warnings(request.app)
    log = request.app[STATE].get("log")
    return web.json_response({"status": "warning" if warnings else "ok", "warnings": warnings,
                              "gate": "allowed below the gate" if reward.gate and reward.gate.overrides else "passed",
                              "judge": reward.card.content_source["source"] if reward.card else "lm",
                              "served": log.written if log is not None else None, "grader_failures": reward.failures})


async def judge(request: web.Request) -> web.Response:
    await _refresh_drift(request.app)
    reward, drift = request.app[REWARD], request.app[STATE].get("drift")
    return web.json_response({"card": reward.card.model_dump(mode="json") if reward.card else None,
                              "gate": reward.gate.model_dump(mode="json") if reward.gate else None,
                              "fusion": reward.fusion, "drift": drift.model_dump(mode="json") if drift else None,
                              "warnings": _warnings(request.app)})


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every failure answered as JSON naming the field; a bug in grading is a 500, logged, and the server goes on."""
    try:
        return await handler(request)
    except FieldError as e:
        return web.json_response({"error": str(e), "field": e.field}, status=e.status)
    except web.HTTPException as e:
        if e.status == 413:
            return web.json_response({"error": f"the request body is over the limit of {request.app[STATE]['max_body']} bytes "
                                               "(--max-body-mb)", "field": "body"}, status=413)
        return web.json_response({"error": e.reason, "field": None}, status=e.status)
    except Exception as e:  # noqa: BLE001 - the service must outlive any one request
        print(f"error: {request.method} {request.path}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return web.json_response({"error": f"internal error: {type(e).__name__}", "field": None}, status=500)


def build_app(reward: RewardFunction, *, max_body: int = 32 << 20, max_batch: int = 4096, workers: int = 32,
              policy_goldset: Path | None = None, measure: Any = None, log: Any = None) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=max_body)
    app[REWARD] = reward
    app[STATE] = {"max_body": max_body, "max_batch": max_batch, "pool": ThreadPoolExecutor(max_workers=workers),
                  "policy_goldset": policy_goldset, "measure": measure, "log": log}
    app.router.add_post("/get_reward", get_reward)
    app.router.add_post("/grade", grade)
    app.router.add_get("/health", health)
    app.router.add_get("/judge", judge)

    async def startup(app: web.Application) -> None:
        await _refresh_drift(app)

    async def cleanup(app: web.Application) -> None:
        app[STATE]["pool"].shutdown(wait=True)

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    return app
