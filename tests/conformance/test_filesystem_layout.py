"""Documentation section "Filesystem layout"."""

import os

from conftest import DATA_DIR, state_of


def test_workspace_is_the_agent_working_directory(sbx):
    """"/workspace | Agent working directory — write all app code here"."""
    r = sbx.exec.run("pwd; stat -c '%U %a' /workspace")
    assert r.stdout == "/workspace\nsandbox 755\n"
    p = sbx.processes.start("pwd; sleep 30")
    assert p.pid


def test_home_sandbox_is_the_user_home(sbx):
    """"/home/sandbox | User home"."""
    r = sbx.exec.run("echo $HOME; cd && pwd; id -un; stat -c '%U' /home/sandbox")
    assert r.stdout == "/home/sandbox\n/home/sandbox\nsandbox\nsandbox\n"


def test_tmp_is_scratch_space_cleared_on_destroy(client, new):
    """"/tmp | Scratch space — cleared on destroy": writable by the user,
    and after destroy the sandbox's disk is gone from the host, so nothing
    written there outlives it (a new sandbox does not see it either)."""
    s = new()
    assert s.exec.run("stat -c '%a' /tmp").stdout == "1777\n"
    s.exec.run("echo secret-scratch > /tmp/scratch.txt")
    assert s.files.read_text("/tmp/scratch.txt") == "secret-scratch\n"
    home = os.path.join(DATA_DIR, "sandboxes", s.id)
    assert os.path.isdir(home), "expected the sandbox's files at %s" % home
    s.destroy()
    assert state_of(client, s.id) == "destroyed"
    assert not os.path.exists(home), "the destroyed sandbox's disk is still on the host"
    t = new()
    assert t.exec.run("test -e /tmp/scratch.txt").exit_code == 1


def test_opt_venv_is_a_preinstalled_python_virtualenv(sbx):
    """"/opt/venv | Pre-installed Python virtualenv (miosa-sandbox, python
    templates)": `python3` and `pip` are the venv's, and the user can
    install into it."""
    r = sbx.exec.run(
        "command -v python3; command -v pip; python3 -c 'import sys; print(sys.prefix, sys.prefix != sys.base_prefix)'; "
        "stat -c '%U' /opt/venv"
    )
    assert r.stdout == "/opt/venv/bin/python3\n/opt/venv/bin/pip\n/opt/venv True\nsandbox\n", r.stdout + r.stderr
    # Installing a package (offline: a local one) lands in the venv.
    sbx.files.write(
        "/workspace/pkg/setup.py",
        "from setuptools import setup\nsetup(name='conformance_pkg', version='1.0', py_modules=['conformance_pkg'])\n",
    )
    sbx.files.write("/workspace/pkg/conformance_pkg.py", "ANSWER = 42\n")
    r = sbx.exec.run(
        "pip install -q --no-index --no-build-isolation /workspace/pkg && "
        "cd / && python3 -c 'import conformance_pkg as m; print(m.ANSWER, m.__file__)'",
        timeout=180,
    )
    assert r.exit_code == 0, r.stderr
    answer, where = r.stdout.split()
    assert answer == "42" and where.startswith("/opt/venv/lib/")


def test_usr_local_bin_holds_system_binaries(sbx):
    """"/usr/local/bin | System binaries": on every command's PATH, so a
    binary put there runs by name."""
    sbx.files.write("/usr/local/bin/hello-conformance", "#!/bin/sh\necho hello from usr local bin\n", mode="0755")
    r = sbx.exec.run("echo $PATH; hello-conformance")
    path, out = r.stdout.split("\n", 1)
    assert "/usr/local/bin" in path.split(":")
    assert out == "hello from usr local bin\n"
