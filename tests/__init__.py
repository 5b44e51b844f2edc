"""The test suite, a package so that its helpers (`tests.support`) are imported by their full
name, from the tests and from the benchmarks (`bench/`) alike."""
