"""The end of the workflow: every method's fine-tuned model saves, loads back exactly (in a
fresh model, and in a fresh process through the CLI), and evaluates to the same metric;
a bad destination is refused before training; method options parse from the CLI."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

import minift.cli
import minift.recipes.finetune
from minift.model import GPT
from minift.peft.core import adapter_layers
from minift.peft.methods import BUILTIN, METHODS
from minift.recipes.evaluate import evaluate_saved
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
from minift.recipes.pretrain import load_base
from minift.recipes.saved import (
    FILES,
    MARKER,
    base_reference,
    check_destination,
    load_finetuned,
    load_language_model,
    save_finetuned,
)
from minift.recipes.tasks import get_task

MERGEABLE = sorted(m.name for m in BUILTIN if m.merge is not None)


@pytest.fixture(scope="module")
def setup():
    base, enc = load_base(progress=False, verbose=False)
    return base, enc, get_task("stdlib-package")


def tuned(setup, method: str, task=None, steps: int = 3, **options):
    base, enc, default_task = setup
    task = task or default_task
    train = train_config(steps=steps, eval_every=steps, eval_at_start=False, progress=False)
    config = FinetuneConfig(method, options, train=train)
    return task, finetune(task, base, enc, config, keep_model=True)


def inputs(enc, n: int = 4, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, enc.n_vocab - 1, (n, length), generator=g)
    mask = torch.ones_like(idx)
    mask[0, length // 2 :] = 0  # one padded row
    return idx, mask


def logits(model, idx, mask):
    with torch.no_grad():
        return model(idx, attention_mask=mask).logits


@pytest.mark.parametrize("method", sorted(m.name for m in BUILTIN))
def test_every_method_saves_and_loads_back_the_same_model(setup, method, tmp_path):
    base, enc, _ = setup
    task, result = tuned(setup, method)
    path = save_finetuned(tmp_path / "m", result, task, enc, base_reference(None, base))
    model, enc2, meta = load_finetuned(path)
    idx, mask = inputs(enc)
    torch.testing.assert_close(logits(model, idx, mask), logits(result.model, idx, mask), rtol=0, atol=0)  # fmt: skip
    assert enc2.encode_ordinary("a test") == enc.encode_ordinary("a test")
    metrics, _, _ = evaluate_saved(path)
    assert metrics == {result.metric_name: result.metric, "val_loss": result.val_loss}
    assert meta["metrics"] == metrics and meta["method"] == method
    # what is stored: the adapter for PEFT, the head alone for a probe, else the model
    kind = "adapter" if METHODS[method].adapter else "head" if method == "probe" else "model"
    assert meta["weights"] == kind
    assert (path / "model.safetensors").exists() == (kind == "model")
    assert (path / "adapter_model.safetensors").exists() == (kind == "adapter")


def test_a_named_adapter_is_saved_and_loaded_under_its_name(setup, tmp_path):
    base, enc, _ = setup
    task, result = tuned(setup, "lora", steps=1, adapter_name="mine")
    path = save_finetuned(tmp_path / "m", result, task, enc, base_reference(None, base))
    model, _, _ = load_finetuned(path)
    assert {layer.adapter_name for _, layer in adapter_layers(model)} == {"mine"}
    idx, mask = inputs(enc)
    torch.testing.assert_close(logits(model, idx, mask), logits(result.model, idx, mask), rtol=0, atol=0)  # fmt: skip


@pytest.mark.parametrize("method", MERGEABLE)
def test_merged_save_is_a_plain_model_folder_with_the_same_outputs(setup, method, tmp_path):
    base, enc, _ = setup
    task, result = tuned(setup, method)
    path = save_finetuned(tmp_path / "m", result, task, enc, base_reference(None, base), merge=True)  # fmt: skip
    model, _, meta = load_finetuned(path)
    assert meta["weights"] == "model" and meta["merged"]
    assert not list(adapter_layers(model)) and list(adapter_layers(result.model))  # unchanged
    idx, mask = inputs(enc)
    torch.testing.assert_close(logits(model, idx, mask), logits(result.model, idx, mask), rtol=1e-5, atol=1e-5)  # fmt: skip
    plain = GPT.load(path)  # no adapter left: an ordinary minift model folder
    torch.testing.assert_close(plain(idx).logits, model.backbone(idx).logits, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["full", "lora", "prompt"])
def test_a_language_model_loads_back_and_generates_the_same_text(setup, method, tmp_path):
    base, enc, _ = setup
    task, result = tuned(setup, method, task=get_task("sort-words"))
    path = save_finetuned(tmp_path / "m", result, task, enc, base_reference(None, base))
    gpt, _ = load_language_model(path)
    prompt = torch.tensor([enc.encode_ordinary(task.val[0]["prompt"])])
    assert torch.equal(gpt.generate(prompt, 8, temperature=0), result.model.generate(prompt, 8, temperature=0))  # fmt: skip
    metrics, _, _ = evaluate_saved(path)
    assert metrics == {result.metric_name: result.metric, "val_loss": result.val_loss}


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    code = "import sys; from minift.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=os.environ.copy()
    )


def test_cli_finetune_save_then_eval_and_generate_in_fresh_processes(setup, tmp_path):
    out = tmp_path / "lora"
    trained = run_cli("finetune", "--method", "lora", "--r", "4", "--steps", "4",
                      "--eval-every", "4", "--save", str(out))  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    meta = json.loads((out / MARKER).read_text())
    assert meta["options"]["r"] == 4 and meta["weights"] == "adapter"
    # a third process (this one) loads it and gets the metric the training run measured
    metrics, _, _ = evaluate_saved(out)
    assert metrics == meta["metrics"]
    evaluated = run_cli("eval", "--model", str(out))
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"val_loss={meta['metrics']['val_loss']:.4f}" in evaluated.stdout
    generated = run_cli("generate", "--model", str(out), "--max-new-tokens", "5")
    assert generated.returncode == 0 and generated.stdout.strip(), generated.stderr


def test_eval_on_a_jsonl_file_of_the_same_labels(setup, tmp_path):
    base, enc, _ = setup
    task, result = tuned(setup, "probe")
    path = save_finetuned(tmp_path / "m", result, task, enc, base_reference(None, base))
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps({"text": r["text"], "label": task.labels[r["label"]]}) + "\n" for r in task.val))  # fmt: skip
    metrics, _, evaluated = evaluate_saved(path, data=data)
    assert len(evaluated.val) == len(task.val)
    assert metrics == {"val_accuracy": result.metric, "val_loss": pytest.approx(result.val_loss)}
    data.write_text(json.dumps({"text": "x", "label": "cobol"}) + "\n")
    with pytest.raises(ValueError, match="cobol"):
        evaluate_saved(path, data=data)


# ------------------------------------------------------------------ the destination
def test_bad_destinations_are_refused_before_training(tmp_path, monkeypatch, capsys):
    def no_training(*a, **k):
        raise AssertionError("trained although the destination is bad")

    monkeypatch.setattr(minift.recipes.finetune, "finetune", no_training)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    cases = [
        (a_file, "a file is there"),
        (a_file / "below", "is a file, so no folder"),
        (full, "not empty"),
    ]
    for dest, message in cases:
        assert minift.cli.main(["finetune", "--steps", "1", "--save", str(dest)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("minift: error:") and message in err and err.count("\n") == 1, err
    assert minift.cli.main(["finetune", "--method", "prefix", "--merge", "--save", str(tmp_path / "new")]) == 2  # fmt: skip
    assert "cannot be folded" in capsys.readouterr().err


def test_an_unwritable_folder_is_refused(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere: make the check see no permission
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == str(locked) else real(p, m))  # fmt: skip
    try:
        with pytest.raises(ValueError, match="not writable"):
            check_destination(locked / "model")
    finally:
        locked.chmod(0o700)


def test_overwrite_replaces_a_saved_model_and_keeps_other_files(setup, tmp_path):
    base, enc, _ = setup
    path = tmp_path / "m"
    task, lora = tuned(setup, "lora")
    save_finetuned(path, lora, task, enc, base_reference(None, base))
    (path / "notes.txt").write_text("mine")
    _, full = tuned(setup, "full")
    with pytest.raises(ValueError, match="not empty.*--overwrite"):
        save_finetuned(path, full, task, enc, base_reference(None, base))
    assert load_finetuned(path)[2]["method"] == "lora"  # the refused save changed nothing
    save_finetuned(path, full, task, enc, base_reference(None, base), overwrite=True)
    model, _, meta = load_finetuned(path)
    assert meta["method"] == "full" and (path / "notes.txt").read_text() == "mine"
    assert not (path / "adapter_model.safetensors").exists()  # the earlier save's files
    idx, mask = inputs(enc)
    torch.testing.assert_close(logits(model, idx, mask), logits(full.model, idx, mask), rtol=0, atol=0)  # fmt: skip


def test_saved_files_have_normal_permissions_and_no_temporaries(setup, tmp_path):
    base, enc, _ = setup
    old = os.umask(0o022)
    try:
        task, result = tuned(setup, "lora", steps=1)
        path = save_finetuned(tmp_path / "m", result, task, enc, base_reference(None, base))
    finally:
        os.umask(old)
    names = sorted(p.name for p in path.iterdir())
    assert set(names) <= set(FILES), names
    for p in path.iterdir():
        assert p.stat().st_mode & 0o777 == 0o644, (p.name, oct(p.stat().st_mode))


def test_a_changed_base_or_an_incomplete_folder_is_a_clear_error(setup, tmp_path):
    base, enc, _ = setup
    task, result = tuned(setup, "lora", steps=1)
    path = save_finetuned(tmp_path / "m", result, task, enc, base_reference(None, base))
    meta = json.loads((path / MARKER).read_text())
    meta["base"]["fingerprint"] = "0" * 16
    (path / MARKER).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not the base this model was fine-tuned from"):
        load_finetuned(path)
    (path / MARKER).unlink()
    with pytest.raises(FileNotFoundError, match=MARKER):
        load_finetuned(path)


# ------------------------------------------------------------------ method options on the CLI
def parse(*argv: str):
    return minift.cli.build_parser().parse_args(["finetune", *argv])


def test_method_options_parse_by_their_field_types():
    args = parse("--method", "lora", "--r", "16", "--alpha", "32", "--target-modules", "c_attn,c_fc", "--use-dora", "true", "--qkv-parts", "q,v")  # fmt: skip
    assert args.options == {"r": 16, "alpha": 32.0, "target_modules": ["c_attn", "c_fc"], "use_dora": True, "qkv_parts": ["q", "v"]}  # fmt: skip
    assert parse("--method", "lora", "--target-modules", "all-linear").options == {"target_modules": "all-linear"}  # fmt: skip
    assert parse("--method", "gradual", "--every", "none").options == {"every": None}
    assert parse("--method", "adapter", "--reduction-factor", "4").options == {"reduction_factor": 4}  # fmt: skip
    assert parse("--method", "lora").options == {}  # the method's defaults apply


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--method", "lora", "--rnk", "4"],
            "unrecognized argument(s) --rnk 4; the options of --method lora are: --r INT",
        ),  # fmt: skip
        (["--method", "adapter", "--r", "4"], "the options of --method adapter are: --layout"),
        (
            ["--method", "lora", "--r", "four"],
            "argument --r/--rank: expected an int, got 'four'; the options of --method lora",
        ),  # fmt: skip
        (["--method", "lora", "--use-dora", "maybe"], "expected true or false, got 'maybe'"),
        (["--method", "full", "--r", "4"], "the options of --method full are: none"),
    ],
)
def test_unknown_or_ill_typed_options_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        parse(*argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("minift: error:") and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("method", sorted(m.name for m in BUILTIN))
def test_help_lists_the_methods_options_with_their_defaults(method, capsys):
    with pytest.raises(SystemExit) as stop:
        parse("--method", method, "--help")
    assert stop.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"options of --method {method}" in out
    for name in METHODS[method].option_defaults():
        assert f"--{name.replace('_', '-')}" in out, name
    if method == "lora":
        # each option: its type, the comment after its field in LoRAConfig, its default
        assert re.search(r"--target-modules STR\|STR,\.\.\. [^-]*default: c_attn,attn\.c_proj", out)
        assert re.search(r"--r INT, --rank INT the rank of B A [^-]*; default: 8", out)


def test_cli_defaults_are_the_recipes():
    args, config = parse(), FinetuneConfig()
    assert (args.max_len, args.steps, args.batch_size, args.eval_every) == (
        config.max_len, config.train.steps, config.batch_size, config.train.eval_every,
    )  # fmt: skip
