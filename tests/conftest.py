"""The kit's test markers. ``make test`` runs ``-m "not slow"``; ``make test-all`` runs all."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: end-to-end tests of minutes (nbgrader's whole loop, formgrader in a "
        "browser); `make test-all` runs them, `make test` does not")
