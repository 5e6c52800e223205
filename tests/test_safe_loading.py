"""No loader in minift can run code from a file: tensors come from safetensors, the rest
from JSON, and the one foreign format (a Hugging Face pytorch_model.bin) is read with
torch.load(weights_only=True), which refuses pickled code."""

import ast
import pathlib
import pickle

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "minift").rglob("*.py"))
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}


def calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def dotted(func) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    parts.append(func.id if isinstance(func, ast.Name) else "<expr>")  # f().eval() is no eval
    return ".".join(reversed(parts))


def keyword(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_the_scan_sees_the_whole_package():
    assert len(SOURCES) > 100


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_can_execute_code_from_a_file(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & UNSAFE_MODULES, path
        if isinstance(node, ast.ImportFrom) and node.module:
            assert node.module.split(".")[0] not in UNSAFE_MODULES, path
    for call in calls(tree):
        name = dotted(call.func)
        where = f"{path.relative_to(ROOT)}:{call.lineno}"
        assert name not in ("eval", "exec", "builtins.eval", "builtins.exec"), where
        if name.endswith("torch.load"):
            w = keyword(call, "weights_only")
            assert isinstance(w, ast.Constant) and w.value is True, f"{where}: torch.load without weights_only=True"  # fmt: skip
        if name in ("yaml.load", "yaml.unsafe_load"):
            raise AssertionError(f"{where}: {name} can construct arbitrary objects")
        if name.endswith("np.load") or name.endswith("numpy.load"):
            p = keyword(call, "allow_pickle")
            assert p is None or (isinstance(p, ast.Constant) and p.value is False), where


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_a_pickled_payload_in_a_foreign_checkpoint_is_refused(tmp_path):
    from minift.model.hf_gpt2 import read_hf_weights

    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Boom()}))
    with pytest.raises(pickle.UnpicklingError):
        read_hf_weights(tmp_path)
