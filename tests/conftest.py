"""Markers of the kit's tests: ``slow`` tests (headless browser, full runs) run in
``make test-all``; ``make test`` leaves them out."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a slow test, run by `make test-all` only")
