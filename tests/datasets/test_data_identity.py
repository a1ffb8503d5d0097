"""What a dataset's episodes are made from has an identity of its own: replacing a file under the same root changes
it, and with it what a finished run is reused under and which runs are paired (tests on generated files in the real
on-disk formats)."""
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from bench.__main__ import main
from meta_bench.datasets import cache, content, load_dataset, registry
from tests.suites import TINY, cell_runs


@pytest.fixture()
def fresh(tmp_path, monkeypatch):
    """A dataset cache of the test's own, and no dataset kept in memory: each load reads the disk as a new process
    would."""
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(registry, "_LOADED", {})


def _replace_image(path, seed):
    picture = np.asarray(Image.open(path))
    Image.fromarray(np.random.default_rng(seed).permutation(picture.reshape(-1)).reshape(picture.shape)).save(path)


def test_replacing_one_image_changes_the_identity_and_an_unchanged_tree_is_not_read_again(omniglot_root, tmp_path,
                                                                                            fresh, monkeypatch):
    root = tmp_path / "omniglot"
    shutil.copytree(omniglot_root, root)
    options = {"root": str(root), "train_characters": 6, "val_characters": 2}
    first = load_dataset("omniglot", options)
    assert first.content_identity.startswith("files-")
    hashed = []
    monkeypatch.setattr(content, "_sha256", lambda path: hashed.append(path) or "x")
    monkeypatch.setattr(registry, "_LOADED", {})
    assert load_dataset("omniglot", options).content_identity == first.content_identity
    assert hashed == []  # the manifest's sizes and times matched: no file was read
    monkeypatch.undo()
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(registry, "_LOADED", {})
    image = next((root / "omniglot-py" / "images_evaluation").rglob("*.png"))
    _replace_image(image, 1)
    second = load_dataset("omniglot", options)
    assert second.content_identity != first.content_identity
    # and the decoded cache is keyed by it: the new drawing is what the episodes hold, not the cached old one
    assert not np.array_equal(second.data.images.numpy(), first.data.images.numpy())


def test_the_split_files_and_the_images_they_name_are_the_miniimagenet_identity(miniimagenet_root, tmp_path, fresh):
    root = tmp_path / "mini"
    shutil.copytree(miniimagenet_root, root)
    before = load_dataset("miniimagenet", {"root": str(root)}).content_identity
    registry._LOADED.clear()
    csv = root / "test.csv"
    rows = csv.read_text().splitlines()
    csv.write_text("\n".join(rows[:1] + rows[1:][::-1]) + "\n")  # the same images, listed in another order
    after = load_dataset("miniimagenet", {"root": str(root)}).content_identity
    assert after != before


def test_generated_datasets_are_identified_by_what_they_are_generated_from(fresh):
    assert load_dataset("sinusoid").content_identity == load_dataset("sinusoid", {}).content_identity
    assert load_dataset("sinusoid", {"amplitude": [0.1, 4.0]}).content_identity != load_dataset(
        "sinusoid").content_identity
    assert load_dataset("glyphs").content_identity.startswith("generated-")


def test_a_replaced_data_file_reruns_the_cells_that_read_it_and_runs_never_pair_across_it(omniglot_root, tmp_path,
                                                                                          fresh, tracking_uri):
    root = tmp_path / "omniglot"
    shutil.copytree(omniglot_root, root)
    raw = {**TINY, "dataset": {"name": "omniglot", "options": {"root": str(root), "train_characters": 6,
                                                               "val_characters": 2}},
           "learners": ["protonet", "finetune"], "tracking": {"uri": tracking_uri},
           "report": {"output_dir": str(tmp_path / "reports")}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    arguments = ["run", str(path), "--no-progress", "--no-report"]
    assert main(arguments) == 0
    registry._LOADED.clear()  # a new invocation is a new process
    assert main(arguments) == 0
    assert len(cell_runs(tracking_uri)) == 2  # the data unchanged: both reused
    _replace_image(next((root / "omniglot-py" / "images_background").rglob("*.png")), 2)
    registry._LOADED.clear()
    assert main(arguments) == 0
    runs = cell_runs(tracking_uri)
    assert len(runs) == 4  # both cells ran again: each read the replaced file's dataset
    identities = {r.data.tags["data_identity"] for r in runs}
    assert len(identities) == 2 and all(i.startswith("files-") for i in identities)
    for label in ("protonet", "finetune"):  # old and new runs of one cell are never paired
        prints = {r.data.tags["eval_fingerprint"] for r in runs if r.data.tags["label"] == label}
        assert len(prints) == 2
    report = main(["report", str(path), "--tracking-uri", tracking_uri])
    assert report == 0
    text = (tmp_path / "reports" / "tiny" / "report.md").read_text()
    assert "WARNING: the runs read more than one version" not in text  # the standing runs read one
    newest = max(runs, key=lambda r: r.info.start_time).data.tags["data_identity"]
    assert f"data: {newest}" in text  # the header names the data the standing runs read


@pytest.mark.parametrize("planned", ["unknown", "files-0000000000000000"])
def test_the_worker_records_the_data_it_read_and_a_change_since_planning_fails_the_cell(planned, tmp_path,
                                                                                        tracking_uri, monkeypatch):
    """Where the planning process cannot read the data (its identity "unknown"), the run records the worker's and is
    never reused; where the two disagree, the data changed in between and the cell fails, naming both."""
    from bench.run import execution  # noqa: PLC0415

    monkeypatch.setattr(execution, "data_identity", lambda cell: planned)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({**TINY, "learners": ["finetune"]}))
    arguments = ["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]
    actual = load_dataset("glyphs").content_identity
    if planned == "unknown":
        assert main(arguments) == 0 and main(arguments) == 0
        runs = cell_runs(tracking_uri)
        assert len(runs) == 2  # not reused: nothing known to compare with
        assert {r.data.tags["data_identity"] for r in runs} == {actual}
        assert all(r.data.tags["eval_fingerprint"].endswith(actual) for r in runs)
    else:
        assert main(arguments) == 1
        (run,) = cell_runs(tracking_uri)
        assert run.info.status == "FAILED"
        assert f"the data changed between planning and running the cell (identity {planned} when planned, " \
               f"{actual} when run)" in run.data.tags["error"]
