import numpy as np
import pytest
import torch

from meta_bench.datasets import cache, glyphs as glyphs_module
from meta_bench.datasets.base import ClassImages


def test_statistics_meet_the_benchmark_bar(glyphs):
    stats = glyphs.statistics()
    assert stats["classes"] > 1000
    assert stats["image_shape"] == [1, 28, 28]
    for split in ("train", "val", "test"):
        assert stats[split]["examples_per_class_min"] >= 20
        assert stats[split]["classes"] > 100


def test_every_class_comes_from_at_least_four_font_files():
    candidates = glyphs_module._candidates(glyphs_module.GlyphsOptions())
    assert all(len(set(fonts)) >= 4 for _, _, fonts in candidates)


def test_meta_test_alphabets_are_held_out_whole(glyphs):
    groups = glyphs.data.groups
    test_alphabets = {groups[i] for i in glyphs.data.splits["test"].tolist()}
    background = {groups[i] for s in ("train", "val") for i in glyphs.data.splits[s].tolist()}
    assert test_alphabets and not test_alphabets & background


def test_look_alike_characters_are_merged(glyphs):
    names = set(glyphs.data.names)
    latin_a = "U+0041 LATIN CAPITAL LETTER A"
    assert latin_a in names
    assert "U+0391 GREEK CAPITAL LETTER ALPHA" not in names
    assert "U+0410 CYRILLIC CAPITAL LETTER A" not in names


def test_no_two_classes_share_a_rendering(glyphs):
    first = glyphs.data.images[glyphs.data.offsets[:-1]].flatten(1)
    assert torch.unique(first, dim=0).shape[0] == first.shape[0]


def test_examples_of_a_class_differ(glyphs):
    examples = glyphs.data.images[:20].flatten(1)
    assert torch.unique(examples, dim=0).shape[0] == 20


def test_options_are_validated():
    with pytest.raises(ValueError, match="glyphs.image_size must be at least 8, got 4"):
        glyphs_module.GlyphsOptions(image_size=4)


def test_cache_is_keyed_by_version_and_rebuilt_when_it_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
    builds = []

    def build():
        builds.append(1)
        images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
        return ClassImages(images, torch.tensor([0, 2, 4]), {"train": torch.tensor([0]), "val": torch.tensor([1]),
                                                               "test": torch.tensor([], dtype=torch.int64)},
                           ["a", "b"], ["x", "y"])

    cache.cached_class_images("toy", {"version": 1}, build)
    cache.cached_class_images("toy", {"version": 1}, build)
    assert len(builds) == 1
    cache.cached_class_images("toy", {"version": 2}, build)
    assert len(builds) == 2
    assert len(list(tmp_path.glob("toy-*.pt"))) == 2 and not list(tmp_path.glob("*.tmp*"))


def test_render_size_is_configurable_on_a_few_characters(monkeypatch):
    options = glyphs_module.GlyphsOptions(image_size=16, examples_per_class=3)
    few = [c for c in glyphs_module._candidates(options) if c[1] in ("Basic Latin", "Greek and Coptic")][:40]
    monkeypatch.setattr(glyphs_module, "_candidates", lambda o: few)
    data = glyphs_module.render(options)
    assert data.images.shape[1:] == (1, 16, 16) and data.images.shape[0] == 3 * len(data.names)
    assert np.all(np.diff(data.offsets.numpy()) == 3)
