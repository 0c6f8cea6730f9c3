"""Developer helpers kept out of the wheel: ``make demo`` (devtools.demo) and Chromium driving the
web page for the tests and benchmarks (devtools.browser)."""
