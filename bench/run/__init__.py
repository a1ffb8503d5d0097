"""The run: cells executed and measured (runner, executors, training, evaluation). May import bench.core,
bench.spec, bench.store, algorithms/ and datasets/."""
