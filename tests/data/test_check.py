"""check_dataset finds each planted problem, leaves the dataset untouched, rejects non-datasets."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from ptools.data.check import check_dataset
from ptools.errors import PtoolsError
from tests.data.helpers import SIZE, csv_layout, folders_layout, seed_layout, solid, square_mask


def _tree(root) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_clean_dataset_has_no_problems(tmp_path):
    report = check_dataset(seed_layout(tmp_path, {"crack": ["a", "b"], "stain": ["c", "d"]}))
    assert report.ok and report.problems == []
    assert report.layout == "seed" and report.counts == {"crack": 2, "stain": 2}
    assert report.samples == 4 and report.normals == 4 and report.files_checked == 12 and report.balance == 1.0


def test_each_planted_problem_is_found(tmp_path):
    stems = {"crack": [f"c{i}" for i in range(16)], "stain": ["s0"]}
    root = seed_layout(tmp_path, stems)
    crack = root / "crack"
    (crack / "normal" / "c0.png").unlink()  # missing normal
    (crack / "defect_segmentation" / "c1.png").unlink()  # missing mask
    square_mask().save(crack / "defect_segmentation" / "ghost.png")  # mask without a defect
    solid((9, 9, 9)).save(crack / "normal" / "lonely.png")  # normal without a defect
    noise = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(noise).save(crack / "defect" / "c2.png")
    data = (crack / "defect" / "c2.png").read_bytes()
    (crack / "defect" / "c2.png").write_bytes(data[: len(data) * 2 // 3])  # truncated inside the pixel data
    (crack / "defect" / "c3.png").write_bytes(b"this is not an image")  # unreadable
    solid((1, 2, 3), SIZE + 4).save(crack / "defect" / "c4.png")  # size mismatch with its normal
    values = np.zeros((SIZE, SIZE), np.uint8)
    values[2:5, 2:5] = 128
    values[6:9, 6:9] = 255
    Image.fromarray(values).save(crack / "defect_segmentation" / "c5.png")  # not binary
    Image.new("L", (SIZE, SIZE), 0).save(crack / "defect_segmentation" / "c6.png")  # empty
    Image.new("L", (SIZE, SIZE), 255).save(crack / "defect_segmentation" / "c7.png")  # full
    solid(77, mode="L").save(crack / "normal" / "c8.png")  # grayscale among RGB
    solid((5, 5, 5)).save(crack / "defect" / "c9.jpg")  # duplicate stem (c9.png exists)
    before = _tree(root)

    report = check_dataset(root)
    assert _tree(root) == before  # never modifies the dataset
    assert not report.ok
    found = {(p.kind, p.path.split("/")[-1]) for p in report.problems}
    expected = {
        ("missing_normal", "c0.png"),
        ("missing_mask", "c1.png"),
        ("orphan_mask", "ghost.png"),
        ("missing_defect", "lonely.png"),
        ("truncated", "c2.png"),
        ("unreadable", "c3.png"),
        ("size_mismatch", "c4.png"),
        ("mask_not_binary", "c5.png"),
        ("mask_empty", "c6.png"),
        ("mask_full", "c7.png"),
        ("mode_mix", "c8.png"),
        ("duplicate_stem", "c9.png"),
    }
    assert expected <= found, expected - found
    not_binary = next(p for p in report.problems if p.kind == "mask_not_binary")
    assert "0, 128, 255" in not_binary.detail
    assert any(p.kind == "imbalance" and p.severity == "warning" for p in report.problems)
    assert report.counts["stain"] == 1 and report.counts["crack"] < 16
    assert report.kinds()["missing_normal"] == 1


def test_folders_and_csv_layouts(tmp_path):
    report = check_dataset(folders_layout(tmp_path / "f"))
    assert report.ok, report.problems
    assert report.layout == "folders" and report.counts == {"crack": 2, "stain": 1} and report.normals == 5
    root = csv_layout(tmp_path / "c")
    with (root / "data.csv").open("a") as f:
        f.write("img/missing.png,rust,\nimg/a.png,rust,\nimg/../img/b.png,dent,\n")
    Image.open(root / "img" / "a.png").save(root / "a.jpg")
    with (root / "data.csv").open("a") as f:
        f.write("a.jpg,dent,\n")
    report = check_dataset(root)
    kinds = {(p.kind, p.severity) for p in report.problems}
    assert kinds == {("missing_file", "error"), ("duplicate_row", "error"), ("duplicate_stem", "warning")}
    assert sum(p.kind == "duplicate_row" for p in report.problems) == 2
    assert report.counts == {"dent": 2, "rust": 2}


def test_not_a_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    for root in (tmp_path, tmp_path / "notes.txt", tmp_path / "missing"):
        with pytest.raises(PtoolsError) as e:
            check_dataset(root)
        assert e.value.exit_code == 2
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PtoolsError, match="manifest"):
        check_dataset(tmp_path / "x.csv")


def test_folders_layout_on_a_seed_set_is_a_clear_error_not_stopiteration(tmp_path):
    root = seed_layout(tmp_path / "s", {"crack": ["a", "b"]})
    with pytest.raises(PtoolsError, match="seed-layout dataset") as e:
        check_dataset(root, "folders")
    assert e.value.exit_code == 2 and "--layout seed" in (e.value.hint or "")


@pytest.mark.parametrize("layout", ["auto", "folders", "seed"])
def test_one_label_of_a_seed_set_says_pass_its_parent(tmp_path, layout):
    root = seed_layout(tmp_path / "s", {"crack": ["a", "b", "c"], "stain": ["d"]})
    with pytest.raises(PtoolsError, match="one label of a seed-layout dataset; pass its parent") as e:
        check_dataset(root / "crack", layout)
    assert str(root.resolve()) in (e.value.hint or "")
    # Without defect_segmentation/, the normal/defect stems paired one to one still tell it apart.
    for mask in (root / "crack" / "defect_segmentation").iterdir():
        mask.unlink()
    (root / "crack" / "defect_segmentation").rmdir()
    with pytest.raises(PtoolsError, match="pass its parent"):
        check_dataset(root / "crack", layout)


def test_a_folders_set_with_a_label_named_defect_is_still_a_folders_set(tmp_path):
    root = tmp_path / "binary"
    (root / "normal").mkdir(parents=True)
    (root / "defect").mkdir()
    for i in range(3):
        solid((10 * i, 0, 0)).save(root / "normal" / f"n{i}.png")
        solid((0, 10 * i, 0)).save(root / "defect" / f"d{i}.png")
    report = check_dataset(root)
    assert report.layout == "folders" and report.counts == {"defect": 3}
