"""Custom templates.

Documentation: "Build a custom template when you need a reproducible base
image with dependencies pre-installed — reduces every sandbox cold-start by
eliminating the install step." and "See Templates for the full BuildSpec
reference, available base images, and template versioning." (with "Boots
from a versioned template").

The guest has no internet in these tests, so the "dependency" is a tool
copied into /usr/local/bin (a `copy` step) plus a library a `run` step
"installs" into the workdir; one build and one rebuild in all.
"""

import uuid

import pytest

from hearth import BuildSpec

NAME = "conformance-tpl-%s" % uuid.uuid4().hex[:8]


def spec(version):
    return (
        BuildSpec(from_="debian", env={"GREETING_VERSION": version}, workdir="/workspace")
        .copy("/usr/local/bin/greet", "#!/bin/sh\necho greet-%s\n" % version, mode=0o755)
        .run("mkdir -p deps/greetlib && echo 'lib %s' > deps/greetlib/VERSION" % version)
    )


@pytest.fixture(scope="module")
def template(client):
    """The template, built once (version 1), with the build that made it."""
    t = client.templates.create(NAME, spec("v1"))
    assert t.id.startswith("tpl_") and t.name == NAME
    build = client.templates.wait(t, timeout=300)
    return t, build


def test_build_a_custom_template_with_dependencies_pre_installed(client, template, new, sbx):
    """"Build a custom template when you need a reproducible base image
    with dependencies pre-installed": the build goes `ready`, and a sandbox
    created from the template has the tool and the library at once, with
    no install step run in it (and the spec's `env`); a sandbox of the
    default template has neither (they came from the build)."""
    t, build = template
    assert build.state == "ready" and build.template_id == t.id and build.version == 1
    got = client.templates.get(t.id)
    assert got.state == "ready" and got.version == "v1" and not got.built_in

    s = new(template_id=t.id)
    assert s.template_id == t.id and s.state == "running"
    r = s.exec.run("greet && cat /workspace/deps/greetlib/VERSION && command -v greet")
    assert (r.exit_code, r.stdout) == (0, "greet-v1\nlib v1\n/usr/local/bin/greet\n"), r.stderr
    # The spec's env is part of the image too.
    assert s.exec.run("echo $GREETING_VERSION").stdout == "v1\n"

    plain = sbx.exec.run("command -v greet || echo absent; ls /workspace/deps 2>/dev/null || echo no-deps")
    assert plain.stdout == "absent\nno-deps\n"


def test_a_custom_template_eliminates_the_install_step_at_cold_start(client, template, new):
    """"...reduces every sandbox cold-start by eliminating the install step":
    a sandbox of the template boots from the template's own snapshot
    (`boot_path` `snapshot`), with what the build installed already there,
    in far less time than the build took to boot a VM and install."""
    t, build = template
    s = new(template_id=t.id)
    assert s.boot_path == "snapshot"
    assert isinstance(s.boot_ms, int) and s.boot_ms < build.duration_ms
    assert s.exec.run("greet").stdout == "greet-v1\n"


def test_template_versioning_a_rebuild_makes_a_new_version_existing_sandboxes_keep_theirs(
    client, template, new
):
    """"...template versioning" / "Boots from a versioned template": a
    rebuild makes version 2, which new sandboxes get, while a sandbox made
    from version 1 keeps version 1 (its `template_version` and its files)."""
    t, _ = template
    old = new(template_id=t.id)
    assert old.template_version == "v1"

    b2 = client.templates.rebuild(t.id, spec("v2"))
    assert b2.version == 2 and b2.template_id == t.id
    b2 = client.templates.wait(b2, timeout=300)
    assert b2.state == "ready"
    got = client.templates.get(t.id)
    assert got.version == "v2"
    assert sorted(v["version"] for v in got.versions) == [1, 2]

    fresh = new(template_id=t.id)
    assert fresh.template_version == "v2" and fresh.boot_path == "snapshot"
    assert fresh.exec.run("greet; cat /workspace/deps/greetlib/VERSION").stdout == "greet-v2\nlib v2\n"

    assert client.sandboxes.get(old.id).template_version == "v1"
    assert old.exec.run("greet; cat /workspace/deps/greetlib/VERSION").stdout == "greet-v1\nlib v1\n"
    assert old.exec.run("echo $GREETING_VERSION").stdout == "v1\n"
