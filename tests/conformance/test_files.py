"""Documentation section "Files — write, read, list, stat"."""

import base64

import pytest

from hearth import ValidationError


def test_write_read_list_stat(sbx):
    """"Files — write, read, list, stat"."""
    w = sbx.files.write("/workspace/files/hello.txt", "hello\n")
    assert w.size_bytes == 6
    assert sbx.files.read_text("/workspace/files/hello.txt") == "hello\n"
    names = {e.name: e for e in sbx.files.list("/workspace/files")}
    assert names["hello.txt"].size == 6 and not names["hello.txt"].is_dir
    st = sbx.files.stat("/workspace/files/hello.txt")
    assert (st.type, st.size, st.path) == ("file", 6, "/workspace/files/hello.txt")
    # What the API wrote is what commands see.
    assert sbx.exec.run("cat /workspace/files/hello.txt").stdout == "hello\n"


@pytest.mark.parametrize("path", ["workspace/x.txt", "x.txt", "./x.txt", ""])
def test_all_file_paths_are_absolute(sbx, path):
    """"All file paths are absolute": a relative path is refused (422 naming
    `path`), not resolved against some directory."""
    with pytest.raises(ValidationError) as e:
        sbx.files.write(path, "x")
    assert e.value.status == 422
    assert "path" in str(e.value)


def test_parent_directories_are_created_automatically_on_write(sbx):
    """"Parent directories are created automatically on write"."""
    sbx.files.write("/workspace/deep/er/and/deeper/file.txt", "x")
    assert sbx.files.stat("/workspace/deep/er/and/deeper").is_dir
    assert sbx.exec.run("cat /workspace/deep/er/and/deeper/file.txt").stdout == "x"


def test_files_written_through_the_api_belong_to_the_user_commands_run_as(sbx):
    """Not stated, but what "write files, then run commands" needs: a file
    and the parents the API made in the agent's directories belong to the
    user that commands run as, so a command can change them (before, they
    were root's: `npm install` in an API-written project failed)."""
    sbx.files.write("/workspace/app/src/main.py", "print(1)\n")
    sbx.files.mkdir("/home/sandbox/made/by/mkdir")
    r = sbx.exec.run(
        "stat -c '%U' /workspace/app /workspace/app/src /workspace/app/src/main.py "
        "/home/sandbox/made /home/sandbox/made/by/mkdir; "
        "echo more >> /workspace/app/src/main.py && mkdir /workspace/app/node_modules "
        "&& touch /home/sandbox/made/by/mkdir/f && echo ok"
    )
    assert r.stdout.split() == ["sandbox"] * 5 + ["ok"], r.stdout + r.stderr
    # Where the user cannot write, the API still can, and it stays root's.
    sbx.files.write("/usr/local/bin/conformance-tool", "#!/bin/sh\necho tool\n", mode="0755")
    assert sbx.exec.run("stat -c '%U' /usr/local/bin/conformance-tool").stdout == "root\n"


def test_file_content_is_base64_encoded_over_the_wire(api, sbx):
    """"File content is base64-encoded over the wire": bytes that are not
    text (NUL, 0xff, invalid UTF-8) go both ways intact as base64."""
    data = bytes(range(256)) + b"\xff\xfe\x00\xc3\x28"
    r = api.post(
        "/sandboxes/%s/fs/write" % sbx.id,
        json={"path": "/workspace/bin/data.bin", "content_base64": base64.b64encode(data).decode()},
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["size_bytes"] == len(data)
    r = api.get("/sandboxes/%s/files/read" % sbx.id, params={"path": "/workspace/bin/data.bin"})
    body = r.json()["data"]
    assert base64.b64decode(body["content"]) == data
    assert body["size"] == len(data)
    # The legacy write route takes base64 in `content`.
    r = api.post(
        "/sandboxes/%s/files" % sbx.id,
        json={"path": "/workspace/bin/legacy.bin", "content": base64.b64encode(b"\x00\x01").decode()},
    )
    assert r.status_code in (200, 201), r.text
    assert sbx.files.read("/workspace/bin/legacy.bin") == b"\x00\x01"
