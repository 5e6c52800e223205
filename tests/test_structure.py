"""The architecture, checked: imports point down the layers of docs/design.md, no cycle."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_checker():
    spec = importlib.util.spec_from_file_location(
        "check_structure", ROOT / "scripts/check_structure.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_imports_point_down_and_form_no_cycle():
    result = load_checker().analyse(ROOT)
    assert result["upward"] == []
    assert result["cycles"] == []


def test_the_checker_sees_upward_edges_string_imports_and_cycles(tmp_path):
    checker = load_checker()
    pkg = tmp_path / "minift"
    for sub in ("model", "peft", "recipes"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (tmp_path / "kernels").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "model" / "gpt.py").write_text(
        "import importlib\nimportlib.import_module('minift.peft.lora')\n"
    )
    (pkg / "peft" / "lora.py").write_text(
        "from ..model import gpt\nfrom minift.recipes import job\n"
    )
    (pkg / "recipes" / "job.py").write_text("from minift.peft.lora import x\n")
    result = checker.analyse(tmp_path)
    assert ("minift.model.gpt", "minift.peft.lora") in result["upward"]  # a string import
    assert ("minift.peft.lora", "minift.recipes.job") in result["upward"]
    assert result["cycles"] == [["minift.model.gpt", "minift.peft.lora", "minift.recipes.job"]]
