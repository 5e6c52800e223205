"""Base sizes and the shipped base: names checked, the shipped files verified by hash,
and the normal-mode default loaded from the package without pretraining."""

import json
import shutil

import pytest

import minift.shipped as shipped
from minift.data.encoding import SHIPPED_TOKENIZER, default_encoding, trained_encoding
from minift.errors import UserError
from minift.recipes.pretrain import (
    SHIPPED_BASES,
    SIZES,
    base_dir,
    base_report,
    default_recipe,
    load_base,
    size_name,
)
from minift.tokenizer import encoding_fingerprint


def test_sizes_and_defaults():
    assert {"tiny", "small", "base", "gpu"} <= set(SIZES)
    assert size_name(fast=True) == "tiny" and size_name(fast=False) == "base"
    assert default_recipe(fast=True) is SIZES["tiny"]
    # "base" is "small" trained on 4x the tokens, same architecture
    small, big = SIZES["small"], SIZES["base"]
    assert big.config(4096) == small.config(4096) and big.steps == 4 * small.steps
    with pytest.raises(ValueError, match="unknown base size 'huge'; sizes: tiny, small"):
        size_name("huge")


def test_the_shipped_base_loads_without_pretraining_and_matches_its_report():
    folder = base_dir("base")
    assert folder.parent == shipped.ASSETS  # not a cache entry: nothing was pretrained
    model, enc = load_base(fast=False, progress=False, verbose=False)
    report = base_report(size="base")
    assert model.num_params() == report["params"]
    assert report["recipe"]["steps"] == SIZES["base"].steps
    assert model.config.vocab_size == enc.n_vocab == 4096
    assert report["val_loss"] < 5.0  # "small" reaches about 5.4; the point of shipping "base"


def test_the_shipped_tokenizer_is_the_one_the_trainer_builds_here():
    assert encoding_fingerprint(default_encoding(fast=False)) == encoding_fingerprint(
        trained_encoding(fast=False)
    )


def test_a_damaged_shipped_file_is_a_one_line_error(tmp_path, monkeypatch):
    folder, sha = SHIPPED_BASES["base"]
    copy = tmp_path / folder
    shutil.copytree(shipped.ASSETS / folder, copy)
    shutil.copy(shipped.ASSETS / SHIPPED_TOKENIZER, tmp_path / SHIPPED_TOKENIZER)
    monkeypatch.setattr(shipped, "ASSETS", tmp_path)
    monkeypatch.setattr(shipped, "_VERIFIED", {})
    assert shipped.shipped_file(f"{folder}/model.safetensors", sha).parent == copy
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1  # one flipped bit in the last weight
    (copy / "model.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "_VERIFIED", {})
    with pytest.raises(UserError, match="damaged or was changed.*minift pretrain --size base"):
        shipped.shipped_file(f"{folder}/model.safetensors", sha)
    (copy / "model.safetensors").unlink()
    with pytest.raises(UserError, match="is missing"):
        shipped.shipped_file(f"{folder}/model.safetensors", sha)


def test_ship_and_compare_round_trip(tmp_path, monkeypatch):
    import minift.recipes.ship as ship

    folder = base_dir("base")
    assert "largest weight difference 0.00e+00" in ship.compare_with_shipped("base", folder)
    assert ship.compare_with_shipped("small", folder) is None  # "small" ships nothing
    monkeypatch.setattr(ship, "ASSETS", tmp_path)
    where = ship.ship_base("base", folder)
    dest = tmp_path / SHIPPED_BASES["base"][0]
    assert str(dest) in where and SHIPPED_BASES["base"][1] in where  # the same bytes, the same hash
    report = json.loads((dest / "report.json").read_text())
    assert report["val_loss"] == base_report(size="base")["val_loss"]
