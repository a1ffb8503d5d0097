"""The `huggingface` dataset on datasets built here and saved with save_to_disk: the same episodes as the `folder`
dataset on the same images written as PNG files (split by ratio, by pattern, by class lists, from some of the
splits); a Hub dataset at its revision (the Hub stood in for); the refusals (name and path both or neither, options
that mean nothing here, a missing column, CSV split files, unlabelled rows, a corrupt image by its row, the library
absent); the content identity; the normalisation; the package importing without the library."""
import shutil
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest
import torch
from PIL import Image

from meta_bench.datasets import SPLITS, DataRequestError, Episode, load_dataset, registry
from meta_bench.datasets.huggingface import hugging_face_datasets

CLASSES = ["owl", "ant", "yak", "bee", "cat", "dog", "eel", "fox", "gnu", "hen"]  # label order is not name order
PER_CLASS = {"train": 4, "test": 2}  # images of each class in each Hugging Face split


pytestmark = pytest.mark.usefixtures("isolated_cache")  # tests/datasets/conftest.py


@pytest.fixture(scope="module")
def hf():
    try:
        return hugging_face_datasets()
    except DataRequestError as error:
        pytest.skip(f"Hugging Face's datasets library is needed to build the test data: {error}")


def save(hf, path, seed=0):
    """A DatasetDict of 14x14 colour images saved at ``path``, rows interleaving the classes; split -> its rows as
    (pixels, label)."""
    rng = np.random.default_rng(seed)
    rows = {split: [(rng.integers(0, 256, (14, 14, 3), dtype=np.uint8), c) for _ in range(count)
                    for c in range(len(CLASSES))] for split, count in PER_CLASS.items()}
    features = hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=CLASSES)})
    tables = {split: hf.Dataset.from_dict({"image": [Image.fromarray(p) for p, _ in split_rows],
                                           "label": [c for _, c in split_rows]}, features=features)
              for split, split_rows in rows.items()}
    hf.DatasetDict(tables).save_to_disk(str(path))
    return rows


def as_folder(rows, splits, root):
    """The rows of ``splits`` as <root>/<class name>/<i>.png, i counting a class's rows in the pooled order."""
    counts = dict.fromkeys(CLASSES, 0)
    for split in splits:
        for pixels, label in rows[split]:
            name = CLASSES[label]
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / name / f"{counts[name]:02d}.png")
            counts[name] += 1
    return root


def split_names(data, split):
    return [data.data.names[i] for i in data.data.splits[split].tolist()]


def class_lists(folder):
    """Split files naming 8 of the 10 classes, not in name order (the files' order is kept)."""
    folder.mkdir(parents=True)
    for split, names in zip(SPLITS, (["yak", "owl", "ant", "hen"], ["gnu", "bee"], ["fox", "cat"])):
        (folder / f"{split}.txt").write_text("\n".join(names) + "\n")


@pytest.mark.parametrize("case", ["ratio", "pattern", "class lists", "one split"])
def test_episodes_equal_the_folder_datasets_on_the_same_images(hf, tmp_path, monkeypatch, case):
    rows = save(hf, tmp_path / "saved")
    pooled = ["train"] if case == "one split" else ["train", "test"]
    root = as_folder(rows, pooled, tmp_path / "folder")
    options = {"split_seed": 3, "image_size": 12}  # resized from 14: both through the same decoding
    if case == "pattern":
        options = {"split_by": "pattern", "split_pattern": ["train", "val", "train", "test"]}
    if case == "class lists":  # relative to the folder's root, and to the current directory for ours
        class_lists(root / "lists")
        monkeypatch.chdir(root)
        options = {"split_by": "files", "split_files": "lists", "channels": 1}
    ours = load_dataset("huggingface", {"path": str(tmp_path / "saved"), **options,
                                        **({"hf_splits": pooled} if case == "one split" else {})})
    theirs = load_dataset("folder", {"root": str(root), **options})
    expected = {"class lists": [4, 2, 2], "pattern": [5, 3, 2]}.get(case, [6, 2, 2])  # ratio: 64/16/20 of 10
    assert [ours.num_classes(s) for s in SPLITS] == expected
    assert ours.min_examples("train") == (4 if case == "one split" else 6)
    for split in SPLITS:
        assert split_names(ours, split) == split_names(theirs, split)
        for index in (0, 1, 7):
            mine, folders = (d.sampler(split, 2, 1, 2, seed=5).episode(index) for d in (ours, theirs))
            for field in fields(Episode):
                assert torch.equal(getattr(mine, field.name), getattr(folders, field.name)), (split, index, field.name)


@pytest.mark.parametrize("given", [{}, {"name": "someone/images", "path": "saved"}])
def test_exactly_one_of_name_and_path_is_required(given):
    with pytest.raises(ValueError, match=r"exactly one of name \(a Hugging Face Hub id\) and path"):
        load_dataset("huggingface", given)


@pytest.mark.parametrize("given, refusal", [
    ({"path": "saved", "revision": "v1"}, "revision selects a version of a Hub dataset"),
    ({"path": "saved", "grouped": True}, "grouped: true needs a group level")])
def test_options_that_mean_nothing_here_are_refused(given, refusal):
    with pytest.raises(ValueError, match=refusal):
        load_dataset("huggingface", given)


def test_a_hub_dataset_is_loaded_at_its_revision_which_is_part_of_its_identity(hf, tmp_path, monkeypatch):
    save(hf, tmp_path / "saved")
    asked = []

    def from_the_hub(name, revision=None):  # no network here: the Hub answers with the saved copy
        asked.append((name, revision))
        return hf.load_from_disk(str(tmp_path / "saved"))

    monkeypatch.setattr(hf, "load_dataset", from_the_hub)
    default = load_dataset("huggingface", {"name": "someone/images"})
    tagged = load_dataset("huggingface", {"name": "someone/images", "revision": "v1"})
    saved = load_dataset("huggingface", {"path": str(tmp_path / "saved")})
    assert asked == [("someone/images", None), ("someone/images", "v1")]
    assert len({default.content_identity, tagged.content_identity, saved.content_identity}) == 3
    assert torch.equal(default.data.images, saved.data.images)


@pytest.mark.parametrize("option, column", [("label_column", "fine_label"), ("image_column", "img")])
def test_a_missing_column_is_named_with_the_columns_there_are(hf, tmp_path, option, column):
    save(hf, tmp_path / "saved")
    with pytest.raises(DataRequestError, match=rf"no column '{column}' \({option}\); its columns: image, label"):
        load_dataset("huggingface", {"path": str(tmp_path / "saved"), option: column})


def test_the_content_identity_follows_the_data_not_the_load(hf, tmp_path):
    options = {"path": str(tmp_path / "saved"), "image_size": 14}
    save(hf, tmp_path / "saved", seed=0)
    first = load_dataset("huggingface", options)
    registry._LOADED.clear()
    again = load_dataset("huggingface", options)
    assert first.content_identity.startswith("hf-") and again.content_identity == first.content_identity
    shutil.rmtree(tmp_path / "saved")
    save(hf, tmp_path / "saved", seed=1)  # other pictures at the same path
    registry._LOADED.clear()
    replaced = load_dataset("huggingface", options)
    assert replaced.content_identity != first.content_identity
    assert not torch.equal(replaced.data.images, first.data.images)  # the decode cache is keyed by the identity


def test_normalisation_is_recorded_and_applied(hf, tmp_path):
    save(hf, tmp_path / "saved")
    plain = load_dataset("huggingface", {"path": str(tmp_path / "saved")})
    scaled = load_dataset("huggingface", {"path": str(tmp_path / "saved"), "normalise": True})
    train = torch.cat([plain.data.images[int(plain.data.offsets[c]):int(plain.data.offsets[c + 1])]
                       for c in plain.data.splits["train"]]).double() / 255
    recorded = scaled.statistics()["normalisation"]
    assert np.allclose(recorded["mean"], train.mean(dim=(0, 2, 3))) and np.allclose(recorded["std"],
                                                                                    train.std(dim=(0, 2, 3)))
    mean, std = (torch.tensor(recorded[k], dtype=torch.float32).view(-1, 1, 1) for k in ("mean", "std"))
    raw, standardised = (d.sampler("val", 2, 1, 1, seed=0).episode(0).support_x for d in (plain, scaled))
    assert torch.allclose((raw - mean) / std, standardised, atol=1e-5)


def test_csv_split_files_are_refused(hf, tmp_path):
    save(hf, tmp_path / "saved")
    (tmp_path / "lists").mkdir()
    for split, label in zip(SPLITS, ("owl", "ant", "yak")):
        (tmp_path / "lists" / f"{split}.csv").write_text(f"filename,label\n{label}.png,{label}\n")
    with pytest.raises(DataRequestError, match=r"CSVs of filename,label.*give train\.txt, val\.txt and test\.txt"):
        load_dataset("huggingface", {"path": str(tmp_path / "saved"), "split_by": "files",
                                     "split_files": str(tmp_path / "lists")})


def test_unlabelled_rows_are_refused_naming_hf_splits(hf, tmp_path):
    rows = len(CLASSES) * PER_CLASS["test"]
    features = hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=CLASSES)})
    pictures = [Image.new("RGB", (14, 14))] * rows
    hf.DatasetDict({"test": hf.Dataset.from_dict({"image": pictures, "label": [-1] * rows}, features=features)}) \
        .save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataRequestError, match=rf"split 'test' .* has {rows} unlabelled row\(s\).*hf_splits"):
        load_dataset("huggingface", {"path": str(tmp_path / "saved")})


def test_a_corrupt_image_is_named_by_its_row(hf, tmp_path):
    features = hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=CLASSES)})
    images = [Image.new("RGB", (14, 14), (i, 0, 0)) for i in range(60)]
    images[17] = {"bytes": b"not an image", "path": None}  # stored as given: nothing decodes it before the loader
    labels = [i % len(CLASSES) for i in range(60)]
    hf.Dataset.from_dict({"image": images, "label": labels}, features=features).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataRequestError, match=r"cannot read the image in row 17 of split 'train' .*Fix or drop"):
        load_dataset("huggingface", {"path": str(tmp_path / "saved")})


def test_without_the_library_the_extra_is_named(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "datasets", raising=False)
    monkeypatch.setattr(sys, "path", [])  # nowhere to find it
    with pytest.raises(DataRequestError, match=r"not installed: pip install 'meta-bench\[huggingface\]'"):
        load_dataset("huggingface", {"path": str(tmp_path)})


def test_the_package_imports_without_the_library(tmp_path):
    script = "import sys, meta_bench.datasets; print('datasets' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "False"
