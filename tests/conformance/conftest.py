"""Shared fixtures of the conformance suite (see README.md here).

The suite runs against a real `hearth serve` that scripts/test-conformance
starts with real VMs: HEARTH_BASE_URL, HEARTH_API_KEY, HEARTH_PREVIEW_URL
(the preview proxy) and HEARTH_TEST_DATA (the server's data directory, for
the few checks that look at the host, such as a destroyed sandbox's disk).
"""

import os
import time
import urllib.parse
import uuid

import httpx
import pytest

from hearth import Hearth, HearthError

BASE_URL = os.environ.get("HEARTH_BASE_URL", "")
API_KEY = os.environ.get("HEARTH_API_KEY", "")
PREVIEW_URL = os.environ.get("HEARTH_PREVIEW_URL", "")
DATA_DIR = os.environ.get("HEARTH_TEST_DATA", "")
# Every sandbox of a run carries this tag, so the run's leftovers are found
# (and destroyed) at the end, whatever a failing test left behind.
RUN_TAG = "conformance-%s" % uuid.uuid4().hex[:8]


SERVER_FIXTURES = {"client", "new", "sbx", "api"}


def pytest_collection_modifyitems(config, items):
    if not (BASE_URL and API_KEY):
        skip = pytest.mark.skip(reason="run through scripts/test-conformance (needs a server)")
        for item in items:
            if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def client():
    c = Hearth(api_key=API_KEY, base_url=BASE_URL, timeout=120.0)
    yield c
    for s in c.sandboxes.list(tags=[RUN_TAG], page_size=100):
        if s.state not in ("destroyed",):
            try:
                s.destroy()
            except HearthError:
                pass
    c.close()


@pytest.fixture
def new(client):
    """`new(**create_args)`: a sandbox of the default template (unless
    `template_id` says otherwise), destroyed after the test."""
    made = []

    def make(**kw):
        kw.setdefault("tags", [])
        kw["tags"] = list(kw["tags"]) + [RUN_TAG]
        kw.setdefault("timeout_sec", 900)
        s = client.sandboxes.create(**kw)
        made.append(s)
        return s

    yield make
    for s in made:
        try:
            s.destroy()
        except HearthError:
            pass


@pytest.fixture(scope="module")
def sbx(client):
    """One running default sandbox shared by a module's read-mostly tests."""
    s = client.sandboxes.create(tags=[RUN_TAG], timeout_sec=1800)
    yield s
    try:
        s.destroy()
    except HearthError:
        pass


@pytest.fixture(scope="session")
def api():
    """The REST API without the SDK, for what the wire itself must show."""
    with httpx.Client(
        base_url=BASE_URL + "/api/v1",
        headers={"Authorization": "Bearer " + API_KEY},
        timeout=120.0,
    ) as h:
        yield h


def wait_for(what, pred, timeout=30.0, every=0.2):
    """Polls `pred` until it returns a true value (returned) or fails with
    `what` and the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s (last: %r)" % (timeout, what, last))
        time.sleep(every)


def state_of(client, sid):
    return client.sandboxes.get(sid).state


def wait_state(client, sid, state, timeout=30.0):
    wait_for("%s to be %s" % (sid, state), lambda: state_of(client, sid) == state, timeout)


def preview_get(url, path="/", **kw):
    """GET on a preview URL through the test server's proxy: the URL's host
    (`<slug>.preview.localhost`) is sent as the Host header to the proxy's
    loopback address, so no name has to resolve."""
    u = urllib.parse.urlsplit(url)
    proxy = urllib.parse.urlsplit(PREVIEW_URL)
    headers = dict(kw.pop("headers", {}))
    headers["Host"] = u.netloc
    return httpx.get(
        "%s://%s%s" % (proxy.scheme, proxy.netloc, path),
        headers=headers,
        timeout=kw.pop("timeout", 15.0),
        **kw,
    )


def serve_http(sbx, port, body):
    """Starts an HTTP server in the sandbox on `port` whose `/` answers
    `body`, and waits until it answers inside the guest."""
    root = "/tmp/www-%d" % port
    sbx.files.write(root + "/index.html", body)
    sbx.processes.start("cd %s && exec python3 -m http.server %d" % (root, port), name="www-%d" % port)
    probe = "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:%d/').read().decode())\"" % port
    wait_for(
        "the guest's server on port %d" % port,
        lambda: sbx.exec.run(probe).stdout.strip() == body.strip(),
        timeout=30.0,
        every=0.5,
    )


# A process whose state is in memory only, for what snapshots and pauses keep.
PROBE_SRC = r"""
import os, signal, time
token = os.urandom(8).hex()
count = [0]
def report(*_):
    with open("/tmp/memprobe.tmp", "w") as f:
        f.write("%d %s %d" % (os.getpid(), token, count[0]))
    os.replace("/tmp/memprobe.tmp", "/tmp/memprobe.out")
def bump(*_):
    count[0] += 1
    report()
signal.signal(signal.SIGUSR2, bump)
signal.signal(signal.SIGUSR1, report)
with open("/tmp/memprobe.pid", "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(3600)
"""


class MemProbe:
    """A process in the guest whose state lives in memory only: a token
    drawn at random when it starts and a counter (`bump`). `read()` asks
    it for `(pid, token, counter)`, or returns None when no such process
    answers."""

    def __init__(self, sbx, start=True):
        self.sbx = sbx
        if not start:
            return  # the probe of a copy of a sandbox that has one
        sbx.files.write("/tmp/memprobe.py", PROBE_SRC)
        self.process = sbx.processes.start("exec python3 /tmp/memprobe.py", name="memprobe")
        wait_for("the memory probe to start", lambda: self.read(), timeout=20.0, every=0.3)

    def _ask(self, sig):
        """Sends `sig` to the probe and returns its report, or None when
        no probe answers."""
        r = self.sbx.exec.run(
            "pid=$(cat /tmp/memprobe.pid 2>/dev/null) && kill -0 $pid 2>/dev/null || exit 3; "
            "rm -f /tmp/memprobe.out; kill -%s $pid || exit 3; "
            "for i in $(seq 50); do [ -f /tmp/memprobe.out ] && break; sleep 0.1; done; "
            "cat /tmp/memprobe.out" % sig
        )
        if r.exit_code != 0:
            return None
        pid, token, count = r.stdout.split()
        return int(pid), token, int(count)

    def read(self):
        """`(pid, token, counter)`, or None when no probe answers."""
        return self._ask("USR1")

    def bump(self):
        """Adds one to the counter; returns the new `read()`."""
        got = self._ask("USR2")
        assert got is not None, "the memory probe did not answer"
        return got
