"""The hybrid pipeline (student from the teacher's layers + LoRA + soft targets + merge)
against its ingredients: every row trains, LoRA rows train a fraction of the parameters,
and merging changes no prediction."""

from minift.recipes.hybrid import ROWS, HybridJob, format_table, run_hybrid


def test_hybrid_and_each_ingredient_at_equal_compute():
    rows = run_hybrid(HybridJob(teacher_steps=20, steps=12, batch_size=16))
    assert set(ROWS) <= set(rows) and "teacher" in rows
    full, lora = rows["full, labels"]["trainable"], rows["LoRA, labels"]["trainable"]
    assert rows["full, soft targets"]["trainable"] == full
    assert 0 < lora == rows[ROWS[-1]]["trainable"] < full / 5
    assert full < rows["teacher"]["trainable"]  # the student keeps half the blocks
    hybrid = rows[ROWS[-1]]
    assert hybrid["metric"] == hybrid["before_merge"]  # merged: the same predictions
    assert all(0.0 <= rows[r]["metric"] <= 1.0 for r in ROWS)
    assert "hybrid: LoRA, soft targets, merged" in format_table(rows)
