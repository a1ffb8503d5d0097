"""The `folder` dataset on generated trees: PNG and JPEG, greyscale and colour, odd sizes; the split by ratio (whole
groups with ``grouped``), by class lists and by miniImageNet-style CSVs; a corrupt image and a class too small for
the episodes named in the refusal; the decode cached; a suite run end to end whose report names the data."""
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bench.__main__ import main
from bench.core.config import ConfigError
from bench.spec.suite import load_suites
from meta_bench.datasets import DataRequestError, load_dataset
from meta_bench.datasets import registry


pytestmark = pytest.mark.usefixtures("isolated_cache")  # tests/datasets/conftest.py


def tree(root, classes=10, images=6, mode="RGB", groups=None, seed=0):
    """``classes`` class folders of ``images`` random pictures each, odd sizes, PNG and JPEG alternating; with
    ``groups``, class folders under that many group folders."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    for c in range(classes):
        folder = root / (f"group{c % groups}" if groups else "") / f"class{c:02d}"
        folder.mkdir(parents=True)
        for i in range(images):
            shape = (17 + c, 23 + i) + ((3,) if channels == 3 else ())
            picture = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
            picture.save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.mark.parametrize("mode, channels", [("RGB", 3), ("L", 1), ("L", 3), ("RGB", 1)])
def test_png_and_jpeg_of_any_size_load_converted_and_resized(tmp_path, mode, channels):
    root = tree(tmp_path / "data", mode=mode)
    data = load_dataset("folder", {"root": str(root), "image_size": 12, "channels": channels})
    assert data.input_shape == (channels, 12, 12) and data.data.images.dtype == torch.uint8
    assert [data.num_classes(s) for s in ("train", "val", "test")] == [6, 2, 2]  # 64/16/20 of 10, rounded
    picture = Image.open(root / "class03" / "1.png").convert("RGB" if channels == 3 else "L").resize((12, 12),
                                                                                                     Image.BILINEAR)
    expected = np.asarray(picture).reshape(12, 12, channels).transpose(2, 0, 1)
    row = int(data.data.offsets[data.data.names.index("class03")]) + 1
    assert np.array_equal(data.data.images[row].numpy(), expected)  # the file's own pixels, in its class's rows
    episode = data.sampler("train", 3, 1, 2, seed=0).episode(0)
    assert episode.query_x.shape == (6, channels, 12, 12)


def test_the_ratio_split_is_seeded_disjoint_and_keeps_groups_whole(tmp_path):
    root = tree(tmp_path / "data", classes=12, groups=6)
    options = {"root": str(root), "image_size": 8, "grouped": True, "split_ratios": [0.5, 0.25, 0.25]}
    data = load_dataset("folder", options)
    split_of = {data.data.names[i]: s for s in ("train", "val", "test") for i in data.data.splits[s].tolist()}
    assert len(split_of) == 12 and all("/" in name for name in split_of)
    for group in range(6):  # both classes of a group in one split
        assert len({s for name, s in split_of.items() if name.startswith(f"group{group}/")}) == 1
    assert [data.num_classes(s) for s in ("train", "val", "test")] == [6, 4, 2]  # 3, 2, 1 groups of two
    other = load_dataset("folder", {**options, "split_seed": 5})
    assert [other.data.names[i] for i in other.data.splits["train"]] != [data.data.names[i]
                                                                          for i in data.data.splits["train"]]


def test_split_files_give_each_split_its_classes(tmp_path):
    root = tree(tmp_path / "data", classes=6)
    for split, classes in (("train", "class00 class01 class02"), ("val", "class03"), ("test", "class04 class05")):
        (root / f"{split}.txt").write_text("\n".join(classes.split()) + "\n")
    data = load_dataset("folder", {"root": str(root), "image_size": 8, "split_by": "files"})
    assert [data.data.names[i] for i in data.data.splits["test"]] == ["class04", "class05"]
    with pytest.raises(DataRequestError, match="split_files '../elsewhere' is outside root"):
        load_dataset("folder", {"root": str(root), "image_size": 8, "split_by": "files", "split_files": "../elsewhere"})
    (root / "val.txt").write_text("class03\nclass00\n")
    registry._LOADED.clear()
    with pytest.raises(DataRequestError, match="class 'class00' is in both the train and val split files"):
        load_dataset("folder", {"root": str(root), "image_size": 8, "split_by": "files"})


def test_miniimagenet_style_csvs_name_each_classes_files(tmp_path, miniimagenet_root):
    data = load_dataset("folder", {"root": str(miniimagenet_root), "split_by": "files"})
    reference = load_dataset("miniimagenet", {"root": str(miniimagenet_root)})
    assert data.data.names == reference.data.names
    for split in ("train", "val", "test"):
        assert torch.equal(data.data.splits[split], reference.data.splits[split])
    assert torch.equal(data.data.images, reference.data.images)  # the same files, decoded the same way


def test_a_corrupt_image_is_named_in_the_error(tmp_path):
    root = tree(tmp_path / "data")
    (root / "class04" / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataRequestError, match=r"cannot read the image .*class04/2\.jpg.*Remove or replace"):
        load_dataset("folder", {"root": str(root), "image_size": 8})


def suite_file(tmp_path, root, **changes):
    raw = {"suite": "own", "dataset": {"name": "folder", "options": {"root": str(root), "image_size": 16,
                                                                     "channels": 1}},
           "learners": ["protonet", "fomaml/functional"], "grid": {"n_way": [2], "k_shot": [1], "seeds": [0]},
           "backbone": {"filters": 4},
           "training": {"meta_iterations": 2, "meta_batch_size": 2, "query": 2, "validate_every": 2,
                        "validation_episodes": 2, "warmup_iterations": 0},
           "evaluation": {"test_episodes": 4, "query": 2}, "report": {"output_dir": str(tmp_path / "reports")},
           **changes}
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_class_too_small_for_the_episodes_is_refused_at_validation_by_name(tmp_path):
    root = tree(tmp_path / "data")
    for extra in sorted((root / "class07").iterdir())[2:]:  # 2 images, K + Q = 3 in every split
        extra.unlink()
    with pytest.raises(ConfigError, match=r"smallest class in split '\w+' \(class 'class07'"):
        load_suites(suite_file(tmp_path, root))


def test_a_suite_on_a_folder_runs_and_its_report_names_the_data(tmp_path, capsys):
    root = tree(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", str(suite_file(tmp_path, root)), "--tracking-uri", uri, "--no-progress"]) == 0
    identity = load_dataset("folder", {"root": str(root), "image_size": 16, "channels": 1}).content_identity
    assert identity.startswith("files-")
    report = next((tmp_path / "reports").rglob("report.md")).read_text()
    assert f"data: {identity}" in report and "folder" in report
    decoded = list((tmp_path / "cache").glob("folder-*.pt"))
    assert len(decoded) == 1  # decoded once, cached under the content's identity


def test_a_split_pattern_deals_the_sorted_classes_in_turn_as_chen_et_al_split_cub(tmp_path):
    root = tree(tmp_path / "data", classes=8)
    data = load_dataset("folder", {"root": str(root), "image_size": 8, "split_by": "pattern",
                                   "split_pattern": ["train", "val", "train", "test"]})
    names = {s: [data.data.names[i] for i in data.data.splits[s]] for s in ("train", "val", "test")}
    assert names == {"train": ["class00", "class02", "class04", "class06"], "val": ["class01", "class05"],
                     "test": ["class03", "class07"]}
    with pytest.raises(ConfigError, match="split_pattern must name each of train, val, test"):
        load_suites(suite_file(tmp_path, root, dataset={"name": "folder", "options": {
            "root": str(root), "split_by": "pattern", "split_pattern": ["train", "test"]}}))
