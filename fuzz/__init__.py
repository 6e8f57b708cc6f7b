"""Long-running fuzz targets, one module per parser: ``python -m fuzz.http1 --runs 1000000``.

Each module holds one ``check(data)`` that states the properties an input must keep (the
same function backs the Hypothesis tests in tests/fuzz/), and a ``main`` that drives it with
atheris (coverage-guided libFuzzer) when it is installed, else with Hypothesis.
"""
