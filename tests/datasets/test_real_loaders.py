import numpy as np
import pytest
import torch

from meta_bench.datasets import DataRequestError, load_dataset



def test_omniglot_protocol_on_a_miniature_tree(omniglot_root, isolated_cache):
    data = load_dataset("omniglot", {"root": str(omniglot_root), "train_characters": 6, "val_characters": 2})
    # 12 characters: 6 train, 2 val, 4 test, each rotated into 4 classes
    assert [data.num_classes(s) for s in ("train", "val", "test")] == [24, 8, 16]
    assert data.input_shape == (1, 28, 28)
    assert data.min_examples("train") == 20
    images, offsets = data.data.images, data.data.offsets
    # rotations are the same drawings turned by 90 degrees
    rot0, rot90 = images[offsets[0]:offsets[1]], images[offsets[1]:offsets[2]]
    assert data.data.names[0].endswith("rot0") and data.data.names[1].endswith("rot90")
    assert (rot90.float() - torch.rot90(rot0, 1, dims=(2, 3)).float()).abs().mean() < 8
    # strokes inverted to white on black, as in the MAML reference code: the white band became black
    assert float(images[offsets[0]].float().mean()) < 128
    # a character's four rotations stay in one split
    split_of = {i: s for s in ("train", "val", "test") for i in data.data.splits[s].tolist()}
    assert all(len({split_of[4 * c + r] for r in range(4)}) == 1 for c in range(12))
    episode = data.sampler("test", 5, 1, 15, seed=0).episode(0)
    assert episode.query_x.shape == (75, 1, 28, 28)


def test_omniglot_missing_root_says_where_to_put_the_data(tmp_path, isolated_cache):
    with pytest.raises(DataRequestError, match="images_background.*not found.*omniglot-py"):
        load_dataset("omniglot", {"root": str(tmp_path / "nowhere")})


def test_omniglot_too_few_characters_for_the_split(omniglot_root, isolated_cache):
    with pytest.raises(DataRequestError, match="leaves no test characters out of the 12 found"):
        load_dataset("omniglot", {"root": str(omniglot_root), "train_characters": 10, "val_characters": 2})


def test_miniimagenet_on_a_generated_miniature(miniimagenet_root, isolated_cache):
    data = load_dataset("miniimagenet", {"root": str(miniimagenet_root)})
    assert [data.num_classes(s) for s in ("train", "val", "test")] == [6, 5, 5]
    assert data.input_shape == (3, 84, 84) and data.data.images.dtype == torch.uint8
    assert data.min_examples("val") == 8
    episode = data.sampler("val", 5, 1, 2, seed=0).episode(0)
    assert episode.support_x.shape == (5, 3, 84, 84)
    with pytest.raises(DataRequestError, match="n_way=6 is larger than the 5 classes of split 'test'"):
        data.sampler("test", 6, 1, 1, seed=0)


def test_miniimagenet_missing_root_says_where_to_put_the_data(tmp_path, isolated_cache):
    with pytest.raises(DataRequestError, match="train.csv, val.csv, test.csv, images not found under"):
        load_dataset("miniimagenet", {"root": str(tmp_path)})


def test_sinusoid_tasks_follow_finn_et_al():
    data = load_dataset("sinusoid")
    sampler = data.sampler("train", 1, 10, 10, seed=0)
    episode = sampler.episode(3)
    assert episode.support_x.shape == (10, 1) and episode.support_y.shape == (10, 1)
    x = torch.cat([episode.support_x, episode.query_x])
    y = torch.cat([episode.support_y, episode.query_y])
    assert float(x.min()) >= -5 and float(x.max()) <= 5
    # y = A sin(x - phase): recover A and phase by least squares on sin/cos features
    features = torch.cat([torch.sin(x), torch.cos(x)], dim=1).double()
    solution = torch.linalg.lstsq(features, y.double()).solution.flatten()
    amplitude = float(solution.norm())
    assert 0.1 <= amplitude <= 5.0
    assert torch.allclose(features @ solution, y.double().flatten(), atol=1e-5)
    assert torch.equal(sampler.episode(3).support_x, episode.support_x)
    with pytest.raises(DataRequestError, match="n_way must be 1, got 5"):
        data.sampler("train", 5, 10, 10, seed=0)
    amplitudes = []
    for i in range(200):
        e = sampler.episode(i)
        f = torch.cat([torch.sin(e.support_x), torch.cos(e.support_x)], dim=1).double()
        amplitudes.append(float(torch.linalg.lstsq(f, e.support_y.double()).solution.norm()))
    assert 0.1 <= min(amplitudes) < 0.6 and 4.5 < max(amplitudes) <= 5.0 + 1e-6
    assert np.isclose(np.mean(amplitudes), 2.55, atol=0.3)
