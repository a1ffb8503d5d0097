import os

import numpy as np
import pytest
from PIL import Image

from meta_bench.datasets import load_dataset
from tests.slurm.cluster import single_node_slurm, unavailable


@pytest.fixture(scope="session", autouse=True)
def autotune_cache(tmp_path_factory):
    """The tests' measured execution choices stay out of the project's results/ (subprocesses and Ray workers
    inherit the variable)."""
    path = tmp_path_factory.mktemp("autotune") / "autotune.json"
    os.environ["METABENCH_AUTOTUNE"] = str(path)
    return path


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real single-node Slurm (tests/slurm/cluster.py) for the session; SLURM_CONF names it to this process and its
    children (submitit's sbatch and sacct, the jobs)."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with single_node_slurm() as cluster, pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(cluster.conf))
        yield cluster


@pytest.fixture(scope="session")
def glyphs():
    return load_dataset("glyphs")


@pytest.fixture()
def tracking_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="session")
def omniglot_root(tmp_path_factory):
    """A miniature Omniglot in exactly torchvision's layout: omniglot-py/<set>/<alphabet>/<character>/*.png,
    105x105 black strokes on white, 20 drawings per character."""
    root = tmp_path_factory.mktemp("omniglot")
    rng = np.random.default_rng(0)
    for set_name, alphabets in (("images_background", ("Alpha", "Beta")), ("images_evaluation", ("Gamma", "Delta"))):
        for alphabet in alphabets:
            for c in range(1, 4):
                strokes = rng.random((105, 105)) > 0.9
                for d in range(1, 21):
                    image = np.where(np.roll(strokes, d, axis=1), 0, 255).astype(np.uint8)
                    image[:, :20] = 255  # an asymmetric white band: rotations are distinguishable
                    name = f"{c:04d}_{d:02d}.png"
                    write_png(root / "omniglot-py" / set_name / alphabet / f"character{c:02d}" / name, image)
    return root


@pytest.fixture(scope="session")
def miniimagenet_root(tmp_path_factory):
    """A miniature miniImageNet in Ravi & Larochelle's format: {train,val,test}.csv of filename,label + images/."""
    root = tmp_path_factory.mktemp("miniimagenet")
    rng = np.random.default_rng(0)
    labels = {"train": ["n01", "n02", "n03", "n04", "n05", "n06"], "val": ["n11", "n12", "n13", "n14", "n15"],
              "test": ["n21", "n22", "n23", "n24", "n25"]}
    for split, names in labels.items():
        rows = ["filename,label"]
        for label in names:
            for i in range(8):
                filename = f"{label}{i:08d}.jpg"
                write_png_like = root / "images" / filename
                write_png_like.parent.mkdir(parents=True, exist_ok=True)
                size = 84 if i % 2 else 100  # some need resizing, as in the original distribution
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(write_png_like, "JPEG")
                rows.append(f"{filename},{label}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root
