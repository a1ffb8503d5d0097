"""meta-bench's harness. Importing it first snapshots the result-affecting source (bench.store.provenance), before any
learner or dataset module loads: every code identity then names the code this process actually runs."""
from bench.store import provenance as _provenance  # noqa: F401  (the snapshot is taken on import)
