"""Fixtures for the interop suite: a fresh broker per test, paho clients that
are always cleaned up, raw sockets, and the paho version in every test id."""

from __future__ import annotations

import pytest

import brokers
import pahocompat
import rawmqtt


def pytest_report_header(config):
    return [f"interop: paho-mqtt {pahocompat.PAHO_VERSION}, broker: {brokers.describe()}"]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "midge_only(reason): Mosquitto behaves otherwise here; skipped when "
        "validating against it (MIDGE_TEST_BROKER=mosquitto)")


def pytest_collection_modifyitems(config, items):
    if brokers.broker_kind() != "mosquitto":
        return
    for item in items:
        marker = item.get_closest_marker("midge_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else "midge only"
            item.add_marker(pytest.mark.skip(reason=f"midge only: {reason}"))


@pytest.fixture(autouse=True, params=[pahocompat.PAHO_ID], ids=[pahocompat.PAHO_ID])
def paho_version(request):
    """Puts the paho version in every test id, e.g. test_x[paho1.6.1]."""
    return request.param


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        broker = getattr(item, "_midge_broker", None)
        if broker is not None:
            report.sections.append(
                (f"broker log ({report.when}, last 200 lines)", broker.log_text(last=200)))


@pytest.fixture
def broker(request, tmp_path):
    """A broker of its own for each test, stopped with SIGTERM at teardown."""
    b = brokers.start_broker(tmp_path)
    request.node._midge_broker = b
    yield b
    was_alive = b.alive()
    code = b.stop()
    if not was_alive:
        pytest.fail(f"the broker died during the test (exit code {code})", pytrace=False)


@pytest.fixture
def paho(broker):
    """Factory: paho(client_id=..., protocol=..., clean_session=...) -> pahocompat.Client."""
    made: list[pahocompat.Client] = []

    def make(**kwargs) -> pahocompat.Client:
        c = pahocompat.Client(broker, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def raw(broker):
    """Factory: raw() -> rawmqtt.RawClient connected (TCP only) to the broker."""
    made: list[rawmqtt.RawClient] = []

    def make() -> rawmqtt.RawClient:
        c = rawmqtt.RawClient(broker.host, broker.port)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()

