"""The benchmarks, one module each, run from the repository root: `python -m bench.NAME
[--quick]` (`make bench` runs the full ones). They import the tests' helpers
(`tests.support`) by name, so a benchmark and the test of the same thing share one rig."""
