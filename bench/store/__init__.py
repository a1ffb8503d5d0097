"""The store: MLflow tracking, claims, ownership and code identity. May import bench.core, bench.spec,
algorithms/ and datasets/."""
