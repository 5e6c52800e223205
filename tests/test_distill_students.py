"""Students built from a teacher: the layer map, every-k-th-block copies, and narrow
students sliced from the teacher (exact at full width, statistics checked by hand)."""

import copy

import pytest
import torch

from minift.distill.slicing import calibrate, principal_basis
from minift.distill.students import (
    check_layer_map,
    check_same_vocabulary,
    every_kth_student,
    narrow_student,
    scratch_student,
    uniform_layer_map,
)
from minift.model import GPT, GPTConfig
from minift.model.heads import SequenceClassifier


def make_teacher(n_layer=4, n_embd=64, n_head=2, seed=0, **kw):
    """A small random GPT whose weights are not at their init (LayerNorm gains and biases
    away from 1 and 0), so a slicing bug cannot hide behind trivial norms."""
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=97, block_size=32, n_layer=n_layer, n_head=n_head, n_embd=n_embd, **kw
    )
    model = GPT(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name:
                p.add_(0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.add_(0.05 * torch.randn_like(p))
            else:
                p.mul_(4.0)
    return model.eval()


def calib_batches(vocab=97, n=3, B=4, T=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        idx = torch.randint(0, vocab, (B, T), generator=g)
        mask = torch.ones(B, T, dtype=torch.long)
        mask[0, 15:] = 0  # right padding, as classification batches have
        out.append((idx, mask))
    return out


# ------------------------------------------------------------------ the layer map
def test_uniform_layer_map_is_tinyberts():
    assert uniform_layer_map(2, 4) == [0, 2, 4]
    assert uniform_layer_map(4, 4) == [0, 1, 2, 3, 4]
    assert uniform_layer_map(4, 12) == [0, 3, 6, 9, 12]
    assert uniform_layer_map(3, 4) == [0, 1, 2, 4]


def test_layer_map_to_layers_that_do_not_exist_is_a_clear_error():
    with pytest.raises(ValueError, match=r"student layer 2 -> teacher layer 7.*0\.\.4"):
        check_layer_map([0, 2, 7], 2, 4)
    with pytest.raises(ValueError, match="does not exist|do not exist"):
        check_layer_map([0, -1, 4], 2, 4)
    with pytest.raises(ValueError, match="3 entries but the student has 4 layers"):
        check_layer_map([0, 2, 4], 3, 4)
    with pytest.raises(ValueError, match="student layers"):
        uniform_layer_map(5, 4)


# ------------------------------------------------------------------ every k-th block
def test_every_kth_student_with_k_1_is_the_teacher():
    teacher = make_teacher()
    student = every_kth_student(teacher, 1)
    assert student.state_dict().keys() == teacher.state_dict().keys()
    for k, v in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[k], v), k
    idx = torch.randint(0, 97, (2, 11))
    assert torch.equal(student(idx).logits, teacher(idx).logits)
    clf = SequenceClassifier(teacher, 3).eval()
    clf_student = every_kth_student(clf, 1)
    assert torch.equal(clf_student(idx).logits, clf(idx).logits)


def test_every_kth_student_keeps_the_blocks_the_layer_map_pairs():
    teacher = make_teacher()
    student = every_kth_student(teacher, 2)
    assert student.config.n_layer == 2
    for j, b in enumerate([1, 3]):  # uniform map [0, 2, 4]: blocks 2 and 4, 1-based
        for (ns, ps), (nt, pt) in zip(
            student.transformer.h[j].named_parameters(), teacher.transformer.h[b].named_parameters()
        ):
            assert ns == nt and torch.equal(ps, pt)
    assert torch.equal(student.transformer.wte.weight, teacher.transformer.wte.weight)
    with pytest.raises(ValueError, match="k must divide"):
        every_kth_student(teacher, 3)
    with pytest.raises(ValueError, match="do not exist"):
        every_kth_student(teacher, 2, blocks=[0, 4])


# ------------------------------------------------------------------ narrow students
def test_narrow_student_at_full_width_computes_what_the_teacher_does():
    """All blocks, heads and neurons kept: the rotation and the LayerNorm -> RMSNorm
    rewrite are exact, so the classifier's scores match (padding included)."""
    torch.manual_seed(3)
    teacher = SequenceClassifier(make_teacher(), 5).eval()
    with torch.no_grad():
        teacher.head.bias.normal_()
    student, info = narrow_student(teacher, calib_batches(), n_embd=64, n_head=2, n_inner=256)
    assert student.backbone.config.norm == "rmsnorm"
    idx = torch.randint(0, 97, (3, 17))
    mask = torch.ones(3, 17, dtype=torch.long)
    mask[1, 9:] = 0
    torch.testing.assert_close(
        student(idx, attention_mask=mask).logits, teacher(idx, attention_mask=mask).logits,
        rtol=1e-4, atol=1e-4,
    )  # fmt: skip
    eye = torch.eye(64, dtype=info.basis.dtype)
    torch.testing.assert_close(info.basis.T @ info.basis, eye, atol=1e-5, rtol=0)
    assert info.head_maps == [[0, 1]] * 4 and info.layer_map == [0, 1, 2, 3, 4]


def test_narrow_student_states_are_the_teachers_centred_states_in_the_new_basis():
    teacher = make_teacher()
    student, info = narrow_student(teacher, calib_batches(), n_embd=64, n_inner=256)
    idx = torch.randint(0, 97, (2, 13))
    ot = teacher(idx, output_hidden_states=True)
    os_ = student(idx, output_hidden_states=True)
    for hs, ht in zip(os_.hidden_states, ot.hidden_states):
        centred = ht - ht.mean(-1, keepdim=True)
        torch.testing.assert_close(hs, centred @ info.basis, rtol=1e-4, atol=1e-4)
    # Narrower: the embeddings (a linear map of the tokens) are still exact projections.
    small, info = narrow_student(teacher, calib_batches(), n_embd=32, n_head=1, n_layer=2)
    h0 = small(idx, output_hidden_states=True).hidden_states[0]
    e = ot.hidden_states[0]
    torch.testing.assert_close(
        h0, (e - e.mean(-1, keepdim=True)) @ info.basis, rtol=1e-4, atol=1e-5
    )
    assert small.config.n_embd == 32 and small.config.n_layer == 2 and small.config.inner_dim == 128
    assert small.num_params() < teacher.num_params() / 3


def test_pruned_neurons_equal_a_teacher_with_those_neurons_silenced():
    teacher = make_teacher(n_layer=2)
    batches = calib_batches()
    stats = calibrate(teacher, batches)
    student, _ = narrow_student(teacher, batches, n_embd=64, n_inner=100)
    silenced = copy.deepcopy(teacher)
    with torch.no_grad():
        for layer, block in enumerate(silenced.transformer.h):
            keep = stats.neuron_importance[layer].topk(100).indices
            drop = torch.ones(256, dtype=torch.bool)
            drop[keep] = False
            block.mlp.c_proj.weight[:, drop] = 0.0
    torch.manual_seed(0)
    clf_t = SequenceClassifier(silenced, 2).eval()
    clf_s, _ = narrow_student(clf_t, batches, n_embd=64, n_inner=100)
    idx = torch.randint(0, 97, (2, 9))
    torch.testing.assert_close(clf_s(idx).logits, clf_t(idx).logits, rtol=1e-4, atol=1e-4)
    assert student.config.inner_dim == 100


def test_calibration_statistics_by_hand():
    teacher = make_teacher(n_layer=1)
    idx = torch.randint(0, 97, (2, 10))
    stats = calibrate(teacher, [(idx, None)])
    out = teacher(idx, output_hidden_states=True, output_attentions=True)
    # Second moment of the centred, rms-normalised states, over both layers' states.
    xs = []
    for h in out.hidden_states:
        x = (h - h.mean(-1, keepdim=True)).double().reshape(-1, 64)
        xs.append(x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt())
    x = torch.cat(xs)
    torch.testing.assert_close(stats.second_moment, x.T @ x / len(x), rtol=1e-5, atol=1e-7)
    # Head importance: the mean norm of each head's write into the residual stream.
    block = teacher.transformer.h[0]
    qkv = block.attn.c_attn(block.ln_1(out.hidden_states[0]))
    v = qkv[..., 128:].view(2, 10, 2, 32).transpose(1, 2)
    heads = out.attentions[0] @ v  # (B, H, T, D)
    w = block.attn.c_proj.weight
    for h in range(2):
        write = heads[:, h] @ w[:, h * 32 : (h + 1) * 32].T
        torch.testing.assert_close(
            stats.head_importance[0, h].float(), write.norm(dim=-1).mean(), rtol=1e-4, atol=1e-6
        )
    basis = principal_basis(stats.second_moment)
    values = torch.diagonal(basis.T @ stats.second_moment @ basis)
    assert torch.all(values[:-1] >= values[1:] - 1e-9)  # sorted by variance, largest first


def test_slicing_bad_shapes_are_clear_errors():
    teacher = make_teacher()
    with pytest.raises(ValueError, match="n_embd 48 must be n_head"):
        narrow_student(teacher, calib_batches(), n_embd=48, n_head=1)
    with pytest.raises(ValueError, match="n_inner 999"):
        narrow_student(teacher, calib_batches(), n_embd=32, n_inner=999)
    with pytest.raises(ValueError, match="do not exist"):
        narrow_student(teacher, calib_batches(), n_embd=32, layer_map=[0, 5])


# ------------------------------------------------------------------ scratch and vocabularies
def test_scratch_student_and_vocabulary_check():
    teacher = SequenceClassifier(make_teacher(), 4)
    student = scratch_student(teacher, n_layer=1, n_embd=32, n_head=1, n_inner=64)
    c = student.backbone.config
    assert (c.n_layer, c.n_embd, c.inner_dim, c.vocab_size) == (1, 32, 64, 97)
    check_same_vocabulary(teacher, student)  # fine
    other = SequenceClassifier(
        GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=1, n_head=1, n_embd=32)), 4
    )
    with pytest.raises(ValueError, match=r"different vocabularies \(97 vs 50 tokens\)"):
        check_same_vocabulary(teacher, other)
    with pytest.raises(ValueError, match="labels"):
        check_same_vocabulary(teacher, SequenceClassifier(student.backbone, 3))
