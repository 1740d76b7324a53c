"""Documentation sections "Run a command — exec" and "Stream stdout/stderr
in real time"."""

import time


def test_exec_run_blocks_until_the_process_exits_and_returns_stdout_stderr_exit_code_duration_ms(sbx):
    """"exec.run blocks until the process exits and returns stdout, stderr,
    exit_code, and duration_ms"."""
    t0 = time.monotonic()
    r = sbx.exec.run("sleep 1; echo out; echo err >&2; exit 3")
    took = time.monotonic() - t0
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 3)
    assert took >= 1.0, "returned before the process exited"
    assert 1000 <= r.duration_ms <= took * 1000 + 50


def test_exec_run_reports_success_with_exit_code_0(sbx):
    r = sbx.exec.run("true")
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""


def test_exec_stream_yields_output_as_it_is_written_then_the_exit(sbx):
    """"exec.stream returns an iterator of SSE events ... surface output
    progressively": the first line arrives while the command still runs."""
    t0 = time.monotonic()
    seen = []
    for ev in sbx.exec.stream("echo first; sleep 3; echo second >&2; exit 4"):
        seen.append((ev.event, time.monotonic() - t0, ev))
    kinds = [k for k, _, _ in seen]
    assert kinds[-1] == "exit" and seen[-1][2].exit_code == 4
    first = next(t for k, t, ev in seen if k == "stdout" and "first" in ev.text)
    second = next(t for k, t, ev in seen if k == "stderr" and "second" in ev.text)
    assert second - first >= 2.5, "the first line was held back until the end (%.1f s apart)" % (second - first)
    out = "".join(ev.text for k, _, ev in seen if k == "stdout")
    err = "".join(ev.text for k, _, ev in seen if k == "stderr")
    assert (out, err) == ("first\n", "second\n")


def test_exec_stream_is_server_sent_events_on_the_wire(api, sbx):
    """"an iterator of SSE events": the raw response is text/event-stream
    with `stdout` and `exit` events."""
    with api.stream("POST", "/sandboxes/%s/exec/stream" % sbx.id, json={"command": "echo sse"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        body = "".join(r.iter_text())
    assert "event: stdout" in body and "event: exit" in body
