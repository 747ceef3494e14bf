"""Markers of the kit's own tests. ``slow``: minutes of grading; ``make test`` leaves them out,
``make test-all`` (CI) runs them."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes of grading; run by make test-all")
