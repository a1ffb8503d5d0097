"""The suite specification: what a suite file says, validated in one place. May import bench.core, algorithms/
and datasets/ (to check names and options against their registries)."""
