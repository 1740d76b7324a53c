"""Subscribe to sandbox events.

Documentation: "The events.stream() endpoint emits lifecycle and activity
SSE events for a sandbox — useful for monitoring agent runs." Production
checklist: "Subscribe to sbx.events.stream() to detect unexpected exits and
trigger retries."

Streams are read on a helper thread (`EventTap`) that records each event
with the time it arrived, so a missing event fails the test instead of
hanging it.
"""

import datetime
import threading
import time
import uuid

from hearth import HearthError

from conftest import wait_state

TERMINAL = ("sandbox.destroyed", "sandbox.error")


class EventTap:
    """Follows `sbx.events.stream()` on a daemon thread until a terminal
    event (destroyed, error) arrives; `wait(type, pred)` returns the first
    matching event (with its arrival time) or fails after a timeout."""

    def __init__(self, sbx):
        self.sbx = sbx
        self.seen = []  # (time.monotonic() at arrival, Event)
        self.error = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for ev in self.sbx.events.stream():
                with self._cond:
                    self.seen.append((time.monotonic(), ev))
                    self._cond.notify_all()
                if ev.type in TERMINAL:
                    return
        except Exception as e:  # reported by wait()
            with self._cond:
                self.error = e
                self._cond.notify_all()

    def wait(self, type_, pred=lambda ev: True, timeout=15.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, ev in self.seen:
                    if ev.type == type_ and pred(ev):
                        return at, ev
                left = deadline - time.monotonic()
                if self.error is not None or left <= 0:
                    raise AssertionError(
                        "no %s event within %.0f s (stream error: %r); seen: %s"
                        % (type_, timeout, self.error, [e.type for _, e in self.seen])
                    )
                self._cond.wait(left)

    def events(self):
        with self._cond:
            return [ev for _, ev in self.seen]


def parse_ts(ts):
    assert isinstance(ts, str) and ts.endswith("Z"), ts
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_events_stream_emits_lifecycle_and_activity_events_for_a_sandbox(new):
    """"The events.stream() endpoint emits lifecycle and activity SSE events
    for a sandbox": a sandbox's life (created, running, an exec started and
    completed, a file written, paused, resumed, destroyed) arrives on its
    stream in that order, each event with `type` (also the SSE event name),
    `sandbox_id`, an RFC 3339 `ts`, an `evt_` id, and increasing SSE ids."""
    s = new()
    tap = EventTap(s)
    tap.wait("sandbox.running")
    s.exec.run("echo activity")
    s.files.write("/workspace/evented.txt", "x")
    s.pause()
    s.resume()
    s.destroy()
    tap.wait("sandbox.destroyed")

    events = tap.events()
    wanted = [
        "sandbox.created",
        "sandbox.running",
        "sandbox.exec.started",
        "sandbox.exec.completed",
        "sandbox.file.written",
        "sandbox.paused",
        "sandbox.resumed",
        "sandbox.destroyed",
    ]
    types = [e.type for e in events]
    # In order: each wanted type after the previous one.
    pos = -1
    for t in wanted:
        later = [i for i, x in enumerate(types) if x == t and i > pos]
        assert later, "%s missing after %s in %s" % (t, types[pos] if pos >= 0 else "start", types)
        pos = later[0]

    started = next(e for e in events if e.type == "sandbox.exec.started")
    assert started.get("data")["command"] == "echo activity"
    completed = next(e for e in events if e.type == "sandbox.exec.completed")
    assert completed.get("data")["exit_code"] == 0
    written = next(e for e in events if e.type == "sandbox.file.written")
    assert written.get("data")["path"] == "/workspace/evented.txt"

    ids, stamps = [], []
    for e in events:
        assert e.get("type") == e.event == e.type
        assert e.get("sandbox_id") == s.id
        assert str(e.get("id", "")).startswith("evt_")
        stamps.append(parse_ts(e.get("ts")))
        ids.append(int(e.id))
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert stamps == sorted(stamps)


def test_events_stream_is_live(sbx):
    """The stream is live ("useful for monitoring agent runs"): on a stream
    opened before an exec, the exec's events arrive within a few seconds of
    the call, not only when the stream is opened again."""
    tap = EventTap(sbx)
    tap.wait("sandbox.running")  # the replay of what happened before
    marker = "echo live-%s" % uuid.uuid4().hex[:8]
    time.sleep(0.5)
    t0 = time.monotonic()
    sbx.exec.run(marker)
    t1 = time.monotonic()
    at, ev = tap.wait("sandbox.exec.started", lambda e: e.get("data", {}).get("command") == marker, timeout=5.0)
    assert t0 <= at <= t1 + 3.0, (at - t0, t1 - t0)
    at, ev = tap.wait(
        "sandbox.exec.completed", lambda e: int(e.id) > int(ev.id), timeout=5.0
    )
    assert at <= t1 + 3.0


def test_subscribe_to_events_stream_to_detect_unexpected_exits_and_trigger_retries(client, new):
    """"Subscribe to sbx.events.stream() to detect unexpected exits and
    trigger retries": when the VM dies under the sandbox (here the guest
    powers itself off, `echo o > /proc/sysrq-trigger` as root), a
    `sandbox.error` event arrives on the stream with the reason; the
    sandbox is in state `error` with the same reason in
    `metadata.last_error` (lifecycle table: "error | Boot or runtime
    failure; check sbx.data["metadata"] for last_error"), and a retry (a
    new sandbox) runs."""
    s = new()
    tap = EventTap(s)
    tap.wait("sandbox.running")
    try:
        s.exec.run("echo o > /proc/sysrq-trigger", user="root", timeout=5)
    except HearthError:
        pass  # the agent may die before it answers
    _, ev = tap.wait("sandbox.error", timeout=30.0)
    reason = ev.get("data")["error"]
    assert "exited unexpectedly" in reason, reason
    wait_state(client, s.id, "error")
    got = client.sandboxes.get(s.id)
    assert got.metadata.get("last_error") == reason
    # No running/destroyed after the error on its own: the error is the news.
    assert [e.type for e in tap.events()][-1] == "sandbox.error"

    retry = new()
    assert retry.state == "running" and retry.exec.run("echo retried").stdout == "retried\n"
