"""Domain adaptation with a trained backbone (minift.adapt.dann_finetune,
minift.recipes.adapt_backbone): DANN with lambda = 0 is plain fine-tuning, bit for bit;
the reversal hands the backbone exactly -lambda times the domain loss's gradient while the
domain head descends it; on a seeded shift the backbone learns to fool the domain head; self-training's rows and the recipe end to end; bad settings."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import minift.cli
from minift.adapt import stdlib_package_comments_task
from minift.adapt.dann_finetune import DomainHead, dann_objective
from minift.adapt.self_training import confident_rows
from minift.errors import UserError
from minift.model import GPT, GPTConfig
from minift.model.grad_reverse import dann_lambda
from minift.model.heads import SequenceClassifier
from minift.recipes.adapt import AdaptConfig, run_adapt
from minift.recipes.adapt_backbone import (
    dann_finetune,
    finetune_config,
    fit_classifier,
    predict_proba,
    self_train_backbone,
)
from minift.recipes.finetune import finetune
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task
from minift.tokenizer import pad_id
from minift.train.objectives import TaskObjective, task_objective


@pytest.fixture(scope="module")
def setup():
    # One thread: on a model this small a second one only waits for the first (and under
    # a loaded machine two spinning threads made these tests ten times slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _setup()
    torch.set_num_threads(threads)


def _setup():
    base, enc = load_base(progress=False, verbose=False)
    task = get_task("stdlib-package", seed=0)
    small = replace(task, train=task.train[:96], val=task.val[::8])
    target = [{"text": r["text"]} for r in stdlib_package_comments_task(seed=0).train[:80]]
    return base, enc, small, target


@pytest.mark.parametrize("backbone", ["lora", "full"])
def test_dann_with_lambda_0_is_plain_fine_tuning_bit_for_bit(setup, backbone):
    base, enc, task, target = setup
    cfg = finetune_config(backbone, 3, None, 20, seed=3)
    cfg = replace(cfg, train=replace(cfg.train, grad_clip=None))  # clipping would see G_d's norm
    plain = finetune(task, base, enc, cfg, keep_model=True).model.state_dict()
    dann, _, history = dann_finetune(task, base, enc, cfg, target, lambd=0.0)
    assert set(dann.state_dict()) == set(plain)  # the domain head is dropped at the end
    assert all(torch.equal(v, plain[k]) for k, v in dann.state_dict().items())
    # the domain head did train (its loss was logged each step) and lambda stayed 0
    assert history[0]["lambda"] == 0.0 and "domain_loss" in history[0]
    # negative control: with the adversary on, the trained weights move elsewhere
    on, _, _ = dann_finetune(task, base, enc, cfg, target, lambd=1.0)
    assert any(not torch.equal(v, plain[k]) for k, v in on.state_dict().items())


def test_the_backbone_gets_minus_lambda_times_the_domain_gradient_and_the_head_descends_it():
    torch.manual_seed(1)
    gpt = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=12)).double()
    model = SequenceClassifier(gpt, 3).double()
    torch.nn.init.normal_(model.head.bias)  # non-zero biases
    model.add_module("domain_head", DomainHead(12, hidden=7).double())
    g = torch.Generator().manual_seed(2)
    src = {
        "idx": torch.randint(0, 50, (5, 11), generator=g),
        "attention_mask": torch.tensor([[1] * 11] * 3 + [[1] * 7 + [0] * 4] * 2),
        "labels": torch.randint(0, 3, (5,), generator=g),
    }
    tgt_ids = [torch.randint(0, 50, (n,), generator=g).tolist() for n in (9, 4, 11, 6)]
    # dann_objective reads only the source objective's batch_fn
    base_obj = TaskObjective(lambda step, micro: src, None, None, "val_accuracy", "max")
    steps, lam_final = 9, 0.7
    objective = dann_objective(base_obj, tgt_ids, 0, 11, 4, seed=0, steps=steps, lambd=lam_final)
    batch = objective.batch_fn(6, 0)
    lam = dann_lambda(6 / 8, lam_final)

    def grads(loss):
        model.zero_grad(set_to_none=False)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    total = grads(objective.loss_fn(model, batch)[0])
    h_s = model.features(src["idx"], attention_mask=src["attention_mask"])
    task = grads(F.cross_entropy(model.head(h_s), src["labels"]))
    h_s = model.features(src["idx"], attention_mask=src["attention_mask"])
    h_t = model.features(batch["target_idx"], attention_mask=batch["target_mask"])
    d = model.domain_head(torch.cat([h_s, h_t]))
    domain = grads(F.binary_cross_entropy_with_logits(d, torch.cat([torch.zeros(5), torch.ones(4)]).double()))  # fmt: skip
    for n in total:
        if n.startswith("domain_head."):
            expected = domain[n]  # G_d descends the domain loss
        elif n.startswith("head."):
            expected = task[n]  # the task head never sees the domain loss
        else:
            expected = task[n] - lam * domain[n]  # the backbone: reversed, scaled
        torch.testing.assert_close(total[n], expected, rtol=1e-10, atol=1e-12, msg=n)
    assert domain["domain_head.net.0.weight"].abs().sum() > 0
    assert any(domain[n].abs().sum() > 0 for n in domain if n.startswith("backbone."))


def test_with_the_reversal_the_backbone_learns_to_fool_the_domain_head(setup):
    """A seeded shift (each target row opens with a marker phrase): without reversal the
    jointly trained domain head learns to tell the domains apart; with it the backbone
    hides the marker and the head's loss stays at or above chance (log 2 = 0.693)."""
    base, enc, task, _ = setup
    target = [{"text": "NOTE NOTE " + r["text"]} for r in get_task("stdlib-package", seed=5).val[:80]]  # fmt: skip
    cfg = finetune_config("lora", 40, None, 20, seed=0)
    final = {}
    for lambd in (0.0, 1.0):
        _, _, history = dann_finetune(task, base, enc, cfg, target, lambd=lambd)
        last = [h["domain_loss"] for h in history if "domain_loss" in h][-10:]
        final[lambd] = sum(last) / len(last)
    assert final[0.0] < 0.5 and final[1.0] > 0.65, final


def test_self_training_with_the_backbone_takes_confident_capped_rows(setup):
    base, enc, task, target = setup
    cfg = finetune_config("lora", 8, None, 20, seed=0)
    model, acc, history = self_train_backbone(task, base, enc, cfg, target, threshold=0.2, rounds=2)
    assert len(history) == 2 and 0.0 <= acc <= 1.0
    for h in history:
        counts = torch.bincount(h["labels"], minlength=task.num_labels)
        assert counts.max() <= 2 * max(1, int(counts[counts > 0].min())) and len(h["keep"]) > 0
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.95, 0.05], [0.85, 0.15]])
    keep, labels = confident_rows(probs, 0.8, balance_ratio=2.0)
    assert keep.tolist() == [0, 2, 3] and labels.tolist() == [0, 1, 0]  # 1 of class 1: 2 of 0
    keep, _ = confident_rows(probs, 0.8, balance_ratio=None)
    assert keep.tolist() == [0, 2, 3, 4]


def test_run_adapt_with_a_lora_backbone_and_the_cli(setup, tmp_path, capsys):
    base, enc, task, _ = setup
    p = tmp_path / "target.txt"
    p.write_text("\n".join(f"the event loop closes transport {i}" for i in range(20)))
    r = run_adapt(task, str(p), base, enc, AdaptConfig(method="dann", backbone="lora", steps=4))
    assert r.target_accuracy is None and sum(r.target_predictions.values()) == 20
    assert r.details["fine_tuning"]["backbone"] == "lora"
    with pytest.raises(UserError, match="unknown backbone 'conv'"):
        AdaptConfig(backbone="conv")
    with pytest.raises(UserError, match="steps >= 1"):
        AdaptConfig(backbone="lora", steps=0)
    with pytest.raises(UserError, match="lambda must be >= 0"):
        dann_objective(task_objective(task, enc, 20, 4, 0), [[1, 2]], pad_id(enc), 20, 4, 0, 5, -1.0)  # fmt: skip
    with pytest.raises(UserError, match="needs unlabelled target"):
        dann_objective(task_objective(task, enc, 20, 4, 0), [], pad_id(enc), 20, 4, 0, 5, 1.0)
    args = ["adapt", "--backbone", "lora", "--steps", "2", "--method", "self-train", "--target-text", str(p)]  # fmt: skip
    assert minift.cli.main(args) in (0, None)
    out = capsys.readouterr().out
    assert "method self-train" in out and "predicted classes" in out
    with pytest.raises(SystemExit):
        minift.cli.main(["adapt", "--backbone", "conv"])
    assert "invalid choice: 'conv'" in capsys.readouterr().err


def test_the_chain_starts_from_the_given_classifier_and_refits_with_fit(setup):
    """self_train_backbone(first=..., fit=...), the chain's self-training half: round 1's
    pseudo-labels are ``first``'s confident rows, and each round trains with ``fit``."""
    base, enc, task, target = setup
    cfg = finetune_config("lora", 2, None, 20, seed=0)
    first = fit_classifier(task, base, enc, cfg)[0]
    seen = []

    def fit(t):
        seen.append(t.train[len(task.train) :])
        return first, 0.5

    _, _, history = self_train_backbone(task, base, enc, cfg, target, 0.2, 2, first=first, fit=fit)  # fmt: skip
    keep, labels = confident_rows(predict_proba(first, task, enc, target, 20), 0.2, 2.0)
    assert torch.equal(history[0]["keep"], keep) and len(seen) == 2 and len(keep) > 0
    assert seen[0] == [{"text": target[i]["text"], "label": int(c)} for i, c in zip(keep.tolist(), labels.tolist())]  # fmt: skip


def test_the_cli_runs_the_chains_and_refuses_them_on_a_frozen_backbone(setup, tmp_path, capsys):
    p = tmp_path / "target.txt"
    p.write_text("\n".join(f"the event loop closes transport {i}" for i in range(20)))
    for method in ("tapt-dann", "tapt-dann-self-train"):
        args = ["adapt", "--backbone", "lora", "--steps", "2", "--dapt-steps", "2", "--rounds", "1", "--method", method, "--target-text", str(p)]  # fmt: skip
        assert minift.cli.main(args) in (0, None)
        out = capsys.readouterr().out
        assert f"method {method}" in out and "predicted classes" in out
    assert minift.cli.main(["adapt", "--method", "tapt-dann", "--target-text", str(p)]) == 2
    assert "needs --backbone lora or full, not frozen" in capsys.readouterr().err
    with pytest.raises(UserError, match="needs --backbone lora or full"):
        AdaptConfig(method="tapt-dann-self-train")


def test_bench_data_backbone_table_smoke(setup, capsys):
    """scripts/bench_data.py's trained-backbone table end to end, one seed, one step a
    fine-tuning, on the tiny base: every method and the oracle, the gap per seed."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "bench_data.py"
    spec = importlib.util.spec_from_file_location("bench_data", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.backbone_table([0], steps=1, dapt_steps=2, quick=True, jobs=1)
    table = out["table"]
    assert list(table) == ["source-only", *bench.BACKBONE_METHODS, "oracle"]
    assert len(out["runs"]["0"]["dann"]["test_correct"]) == 240  # the target test rows
    for name, row in table.items():
        assert len(row["target_accuracy"]) == 1 and 0.0 <= row["target_accuracy"][0] <= 1.0
        assert {"target_accuracy", "selection_accuracy", "gap_closed"} <= set(row)
        assert (name == "source-only") != ("vs_source_only" in row)
    assert "2b. domain adaptation with a LoRA-trained backbone" in capsys.readouterr().out
