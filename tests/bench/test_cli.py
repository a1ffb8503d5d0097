import json

from bench.__main__ import main


def test_list_prints_every_learner_with_doc_and_defaults(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("fomaml/deepcopy", "fomaml/functional", "fomaml/higher", "maml", "finetune"):
        assert f"{name}\n" in out
    assert "inner_lr=0.4" in out and "head_epochs=100" in out and "task_batching='auto'" in out


def test_verify_passes_and_prints_each_pair(capsys):
    assert main(["verify"]) == 0
    out = capsys.readouterr().out
    assert "fomaml/deepcopy      vs fomaml/functional" in out and "finite differences" in out
    assert "all checks passed" in out


def test_verify_fails_when_variants_disagree(monkeypatch, capsys):
    from bench.consumers import verify

    real = verify.meta_gradient

    def broken(name, options, case):
        grad = real(name, options, case)
        return grad * 1.01 if name == "fomaml/higher" else grad

    monkeypatch.setattr(verify, "meta_gradient", broken)
    assert main(["verify"]) == 1
    assert "DISAGREE" in capsys.readouterr().out


def test_datasets_prints_statistics(capsys):
    assert main(["datasets", "glyphs"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["classes"] > 1000 and stats["test"]["alphabets"] >= 1


def test_datasets_unknown_name_exits_2(capsys):
    assert main(["datasets", "glyph"]) == 2
    assert "did you mean 'glyphs'" in capsys.readouterr().err
