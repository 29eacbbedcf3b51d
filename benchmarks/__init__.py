"""In-process benchmarks of single components (the scheduler core, the store), run from the repo root:
``python -m benchmarks.bench_get_work``, ``python -m benchmarks.bench_store``."""
