"""Students: smaller GPTs built from a teacher, and the layer map that pairs their layers.

Three ways to get a student:

- **every k-th block** (DistilBERT's initialisation, Sanh et al. 2019): same width, the
  teacher's embeddings and one block out of every k. With k = 1 it *is* the teacher.
- **narrower, from the teacher** (``narrow_student``): a smaller width d, fewer heads and
  MLP neurons, initialised by rotating the teacher's residual stream onto its d principal
  directions and keeping the most important heads and neurons (minift.distill.slicing).
- **narrower, from scratch** (``scratch_student``): the same small architecture with
  GPT-2's random initialisation; the baseline that shows what the teacher's weights buy.

The **layer map** (TinyBERT's uniform mapping, Jiao et al. 2020) says which teacher layer
each student layer imitates. Layers are counted as in ``hidden_states``: 0 is the
embedding output and m is the output of block m (1-based), so a student with M blocks
and a teacher with N blocks map student layer m to teacher layer g(m) = m * N / M
(rounded down), g(0) = 0. The attention maps of student block m pair with those of
teacher block g(m). A map is a list of M + 1 teacher layers, one per student layer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from minift.model import GPT, GPTConfig
from minift.model.heads import SequenceClassifier


def backbone_of(model: nn.Module) -> GPT:
    """The GPT inside a model (a GPT itself or a SequenceClassifier's backbone)."""
    if isinstance(model, GPT):
        return model
    if isinstance(model, SequenceClassifier):
        return model.backbone
    raise ValueError(f"expected a GPT or a SequenceClassifier, got {type(model).__name__}")


def check_same_vocabulary(teacher: nn.Module, student: nn.Module) -> None:
    """Logit distillation compares distributions over the same tokens (or labels)."""
    tv, sv = backbone_of(teacher).config.vocab_size, backbone_of(student).config.vocab_size
    if tv != sv:
        raise ValueError(
            f"teacher and student have different vocabularies ({tv} vs {sv} tokens): "
            "distillation compares their next-token distributions token by token, so "
            "build the student with the teacher's tokenizer (vocab_size)"
        )
    tl = getattr(teacher, "num_labels", None)
    sl = getattr(student, "num_labels", None)
    if tl != sl:
        raise ValueError(
            f"teacher has {tl} labels and student {sl}: give both the same task head (or both none)"
        )


# ------------------------------------------------------------------------ the layer map
def uniform_layer_map(n_student: int, n_teacher: int) -> list[int]:
    """TinyBERT's uniform map: student layer m -> teacher layer floor(m * N / M)."""
    if not 1 <= n_student <= n_teacher:
        raise ValueError(
            f"a uniform layer map needs 1 <= student layers ({n_student}) <= teacher "
            f"layers ({n_teacher})"
        )
    return [m * n_teacher // n_student for m in range(n_student + 1)]


def check_layer_map(layer_map: list[int], n_student: int, n_teacher: int) -> list[int]:
    """Validate a map of the M + 1 student layers (0 = embeddings) to teacher layers."""
    layer_map = [int(x) for x in layer_map]
    if len(layer_map) != n_student + 1:
        raise ValueError(
            f"the layer map has {len(layer_map)} entries but the student has "
            f"{n_student + 1} layers (embeddings + {n_student} blocks); give one teacher "
            f"layer per student layer, e.g. {uniform_layer_map(n_student, n_teacher)}"
        )
    bad = [(m, t) for m, t in enumerate(layer_map) if not 0 <= t <= n_teacher]
    if bad:
        where = ", ".join(f"student layer {m} -> teacher layer {t}" for m, t in bad)
        raise ValueError(
            f"layer map points to layers that do not exist ({where}); the teacher has "
            f"layers 0..{n_teacher} (0 = embeddings, {n_teacher} = last block)"
        )
    return layer_map


def blocks_from_map(layer_map: list[int]) -> list[int]:
    """Teacher blocks (0-based) that initialise student blocks 0.. (block m-1 <- g(m)-1)."""
    if any(t < 1 for t in layer_map[1:]):
        raise ValueError(f"layer map {layer_map} sends a student block to the embeddings")
    return [t - 1 for t in layer_map[1:]]


# ------------------------------------------------------------------------ students
def _with_head(teacher: nn.Module, backbone: GPT) -> nn.Module:
    if not isinstance(teacher, SequenceClassifier):
        return backbone
    student = SequenceClassifier(backbone, teacher.num_labels, pooling=teacher.pooling)
    student.label_token_ids = teacher.label_token_ids
    return student


def every_kth_student(teacher: nn.Module, k: int, blocks: list[int] | None = None) -> nn.Module:
    """DistilBERT's student: the teacher's width and embeddings, one block out of k.

    Blocks k-1, 2k-1, ... are kept, the blocks the uniform layer map pairs with the
    student's (so student block m starts as the teacher block it will imitate); pass
    ``blocks`` to choose others. A task head is copied too. k = 1 gives the teacher.
    """
    gpt = backbone_of(teacher)
    n = gpt.config.n_layer
    if k < 1 or n % k:
        raise ValueError(f"k must divide the teacher's {n} blocks, got k={k}")
    blocks = list(blocks) if blocks is not None else blocks_from_map(uniform_layer_map(n // k, n))
    bad = [b for b in blocks if not 0 <= b < n]
    if bad or not blocks:
        raise ValueError(f"blocks {bad or blocks} do not exist; the teacher has blocks 0..{n - 1}")
    config = GPTConfig.from_dict({**gpt.config.to_dict(), "n_layer": len(blocks)})
    student = GPT(config)
    state = {}
    for name, value in gpt.state_dict().items():
        if name.startswith("transformer.h."):
            block, rest = name[len("transformer.h.") :].split(".", 1)
            for j, b in enumerate(blocks):
                if b == int(block):
                    state[f"transformer.h.{j}.{rest}"] = value.clone()
        else:
            state[name] = value.clone()
    student.load_state_dict(state)
    out = _with_head(teacher, student)
    if isinstance(teacher, SequenceClassifier):
        out.head.load_state_dict(teacher.head.state_dict())
    return out.to(gpt.lm_head.weight.device)


def scratch_student(
    teacher: nn.Module,
    n_layer: int,
    n_embd: int,
    n_head: int,
    n_inner: int | None = None,
    seed: int = 0,
) -> nn.Module:
    """A student of the given shape with GPT-2's random initialisation (and a random task
    head, or the label words' output embeddings when the teacher's head has them)."""
    gpt = backbone_of(teacher)
    fields = {
        **gpt.config.to_dict(),
        "n_layer": n_layer,
        "n_embd": n_embd,
        "n_head": n_head,
        "n_inner": n_inner,
    }
    torch.manual_seed(seed)
    student = _with_head(teacher, GPT(GPTConfig.from_dict(fields)))
    if isinstance(student, SequenceClassifier):
        student.init_head()
    return student.to(gpt.lm_head.weight.device)


@dataclass
class SliceInfo:
    """How a narrow student relates to its teacher (what the feature losses can use)."""

    basis: torch.Tensor  # (C_teacher, d): h_teacher - mean ~ h_student @ basis.T
    layer_map: list[int]  # student layer m imitates teacher layer layer_map[m]
    head_maps: list[list[int]]  # per student block: the teacher heads it kept


def narrow_student(
    teacher: nn.Module,
    batches,
    n_embd: int,
    n_head: int | None = None,
    n_inner: int | None = None,
    layer_map: list[int] | None = None,
    n_layer: int | None = None,
) -> tuple[nn.Module, SliceInfo]:
    """A narrower student initialised from the teacher; returns (student, SliceInfo).

    The student's width is ``n_embd`` (= n_head x the teacher's head_dim), its blocks
    start from the teacher blocks that ``layer_map`` pairs with them (default: uniform
    over ``n_layer`` blocks), and ``batches`` (an iterable of (idx, attention_mask))
    calibrate which directions, heads and neurons to keep: see minift.distill.slicing.
    A task head is carried over with the teacher's final norm folded into it (exact).
    """
    from minift.distill.slicing import calibrate, slice_teacher

    gpt = backbone_of(teacher)
    n = gpt.config.n_layer
    if layer_map is None:
        layer_map = uniform_layer_map(n_layer or n, n)
    layer_map = check_layer_map(layer_map, len(layer_map) - 1, n)
    n_head = n_head or max(1, n_embd // gpt.config.head_dim)
    stats = calibrate(gpt, batches)
    backbone, basis, (g, beta), head_maps = slice_teacher(
        gpt, stats, blocks_from_map(layer_map), n_embd, n_head, n_inner
    )
    student = _with_head(teacher, backbone)
    if isinstance(teacher, SequenceClassifier):
        # The head reads ln_f's output: fold the teacher's gain and bias into it (exact).
        with torch.no_grad():
            w = teacher.head.weight.double()
            head = w @ torch.diag(g) @ basis.double()
            student.head.weight.copy_(head.to(student.head.weight.dtype))
            student.head.bias.copy_((teacher.head.bias.double() + w @ beta).to(head.dtype))
            student.backbone.transformer.ln_f.weight.fill_((gpt.config.n_embd / n_embd) ** 0.5)
    return student.to(gpt.lm_head.weight.device), SliceInfo(basis, layer_map, head_maps)


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy (students are trained in place; keep the original for baselines)."""
    return copy.deepcopy(model)
