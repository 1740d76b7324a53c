"""Documentation section "Environment variables"."""

import pytest

from conftest import RUN_TAG, wait_for

ENV = {"APP_MODE": "conformance", "GREETING": "hello world"}


@pytest.fixture(scope="module")
def env_sbx(client):
    s = client.sandboxes.create(env=ENV, secret_env={"API_TOKEN": "s3cr3t"}, tags=[RUN_TAG], timeout_sec=900)
    yield s
    s.destroy()


def test_env_set_at_create_is_visible_to_all_processes(env_sbx):
    """"Env vars set at create time are injected into the VM at boot and
    visible to all processes": commands, background processes, terminals,
    any user, and processes those start."""
    assert env_sbx.exec.run('echo "$APP_MODE|$GREETING"').stdout == "conformance|hello world\n"
    assert env_sbx.exec.run('echo "$APP_MODE"', user="root").stdout == "conformance\n"
    assert env_sbx.exec.run("sh -c 'sh -c \"echo \\$GREETING\"'").stdout == "hello world\n"
    p = env_sbx.processes.start('echo "bg:$APP_MODE"; sleep 30')
    wait_for("the background process's output", lambda: "bg:conformance" in env_sbx.processes.logs(p.pid).stdout)
    with env_sbx.terminal.create() as term:
        term.send('echo "tty:$GREETING"\n')
        assert b"tty:hello world" in term.read_until(b"tty:hello world", timeout=15)


def test_env_is_read_only_once_the_sandbox_is_running(api, env_sbx):
    """"They are read-only once the sandbox is running": a change is 409,
    and the live set is unchanged."""
    r = api.put("/sandboxes/%s/env" % env_sbx.id, json={"vars": [{"key": "APP_MODE", "value": "changed"}]})
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "invalid_state"
    assert env_sbx.exec.run("echo $APP_MODE").stdout == "conformance\n"


def test_env_list_returns_the_live_set(env_sbx):
    """"env.list() returns the live set"; a secret's value is never
    returned (the production checklist: "Never store long-lived secrets in
    env")."""
    live = {v.key: v.value for v in env_sbx.env.list()}
    assert live["APP_MODE"] == "conformance" and live["GREETING"] == "hello world"
    assert "API_TOKEN" in live and live["API_TOKEN"] != "s3cr3t"
    assert env_sbx.exec.run("echo $API_TOKEN").stdout == "s3cr3t\n"


def test_env_per_exec_is_not_kept(env_sbx):
    """"pass them per-exec": a per-exec variable reaches that command only."""
    assert env_sbx.exec.run("echo $ONE_SHOT", env={"ONE_SHOT": "now"}).stdout == "now\n"
    assert env_sbx.exec.run("echo $ONE_SHOT").stdout == "\n"
    assert "ONE_SHOT" not in {v.key for v in env_sbx.env.list()}


def test_env_is_read_only_while_paused_too__hearth_differs_from_api_md(api, new):
    """The page makes env read-only "once the sandbox is running"; API.md
    allowed a change while paused. Hearth refuses that too (409), on
    purpose: a paused sandbox resumes its processes with the env they
    already hold, so a change would reach only commands started later and
    `env.list()` would no longer be the live set."""
    s = new(env={"STAGE": "one"})
    s.pause()
    r = api.put("/sandboxes/%s/env" % s.id, json={"vars": [{"key": "STAGE", "value": "two"}]})
    assert r.status_code == 409, r.text
    assert "paused" in r.json()["error"]["message"]
    s.resume()
    assert s.exec.run("echo $STAGE").stdout == "one\n"
    assert {v.key: v.value for v in s.env.list()}["STAGE"] == "one"
