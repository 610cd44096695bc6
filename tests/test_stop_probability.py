"""The eval's P(`<stop`) on the real embedded policy, checked against the same probability read another way: a generate
call constrained to spell `<stop`, whose raw logits at each step come from the model's cached decoding path."""

import json

import pytest

from calibrator.expert_logs.samples_file import TrainingSample
from calibrator.expert_logs.logs import Message
from train.data import policy_messages
from train.evaluate import STOP_PREFIX, generate

pytestmark = pytest.mark.slow
INSTRUCTIONS = "You are a doctor. Ask the patient one short question, or reply <stop /> when you have asked enough."


def test_the_eval_probability_of_stopping_is_what_a_constrained_generation_gives(tmp_path, monkeypatch, policy_model):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = policy_model
    samples = [TrainingSample(id=f"s_{k}", session_id="s", context=[Message(role="assistant", content="What brings you in?"),
                                                                    Message(role="user", content=said)],
                              future=[], target_info=[], decision="continue")
               for k, said in enumerate(["A cough, for a week now.", "Thanks doctor, that is all, bye."])]
    made = generate(model_dir, samples, INSTRUCTIONS, 8, cache=tmp_path / "eval.jsonl")
    with monkeypatch.context() as patched:  # read back from the cache: the model is not even loaded
        patched.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("model loaded"))
        assert generate(model_dir, samples, INSTRUCTIONS, 8, cache=tmp_path / "eval.jsonl") == made
    # a cache written before P(<stop) was measured: its completions are kept, only the probabilities are computed
    old = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "p_stop"}
                                                            | {"completion": "MARKED?"}) + "\n" for r in old))
    redone = generate(model_dir, samples, INSTRUCTIONS, 8, cache=tmp_path / "eval.jsonl")
    assert [c.text for c in redone] == ["MARKED?", "MARKED?"]
    assert [c.p_stop for c in redone] == pytest.approx([c.p_stop for c in made], rel=1e-6)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    spelled = tokenizer(STOP_PREFIX, add_special_tokens=False)["input_ids"]
    for sample, completion in zip(samples, made):
        ids = tokenizer.apply_chat_template(policy_messages(sample.context, INSTRUCTIONS), add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        prompt_length = ids["input_ids"].shape[1]
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=len(spelled), do_sample=False, output_logits=True,
                                 return_dict_in_generate=True, pad_token_id=tokenizer.eos_token_id,
                                 prefix_allowed_tokens_fn=lambda _, sofar: [spelled[sofar.shape[0] - prompt_length]])
        assert out.sequences[0, prompt_length:].tolist() == spelled
        expected = 1.0
        for step, token in zip(out.logits, spelled):
            expected *= torch.softmax(step[0].float(), dim=-1)[token].item()
        assert 0.0 < completion.p_stop < 1.0
        assert completion.p_stop == pytest.approx(expected, rel=1e-3)
