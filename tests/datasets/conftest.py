import pytest


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch):
    """Decoded datasets and file manifests in the test's own folder, and a fresh registry of loaded datasets: each
    test loads its own data."""
    from meta_bench.datasets import cache, registry

    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(registry, "_LOADED", {})
