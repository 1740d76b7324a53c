"""Documentation section "What a Sandbox is — concretely"."""

import urllib.parse

import pytest

from conftest import BASE_URL, wait_for
from hearth import ValidationError


def guest_facts(sbx):
    r = sbx.exec.run(
        "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo; "
        "df -k --output=size / | tail -1; uname -r"
    )
    assert r.exit_code == 0, r.stderr
    cpus, mem_kib, disk_kib, kernel = r.stdout.split()
    return int(cpus), int(mem_kib), int(disk_kib), kernel


def test_a_microvm_with_its_own_kernel_and_resources__hearth_differs_qemu_not_firecracker(sbx):
    """"A Firecracker microVM (not a container ...)". Hearth runs each
    sandbox as a QEMU microVM (KVM where the host has it, else TCG
    emulation): a guest kernel of its own, with exactly the CPUs and memory
    it was given, not the host's."""
    cpus, mem_kib, _, kernel = guest_facts(sbx)
    assert cpus == 1
    # The guest sees its own 1 GiB (less what its kernel reserves), not the host's RAM.
    assert 900 * 1024 < mem_kib <= 1024 * 1024
    pid1 = sbx.exec.run("cat /proc/1/comm").stdout.strip()
    assert pid1 != "systemd" and pid1 != "", "PID 1 of the guest is Hearth's agent, not the host's init"
    assert kernel and sbx.exec.run("test -d /sys/firmware/acpi || test -d /sys/bus/virtio").exit_code == 0


def test_1_vcpu_1_gib_ram_3_gib_disk_by_default(sbx):
    """"1 vCPU, 1 GiB RAM, 3 GiB disk by default"."""
    assert (sbx.cpu_count, sbx.memory_mb, sbx.disk_size_mb) == (1, 1024, 3072)
    cpus, mem_kib, disk_kib, _ = guest_facts(sbx)
    assert cpus == 1
    assert 900 * 1024 < mem_kib <= 1024 * 1024
    # The root filesystem offers the sandbox's 3 GiB (less filesystem overhead).
    assert 2.5 * 1024 * 1024 < disk_kib <= 3.1 * 1024 * 1024, disk_kib


def test_configurable_up_to_8_vcpu_8_gib_ram_10_gib_disk__hearth_differs_vcpus_also_capped_at_the_hosts(client, new):
    """"configurable up to 8 vCPU, 8 GiB RAM, 10 GiB disk". Hearth also
    refuses more vCPUs than the host has (422 naming the host's count), so
    the largest sandbox this host takes is min(8, host CPUs) vCPUs."""
    try:
        client.sandboxes.create(cpu_count=8, memory_mb=8192, disk_size_mb=10240, wait=False).destroy()
        host_cpus = 8
    except ValidationError as e:
        (detail,) = e.details
        assert detail["field"] == "cpu_count"
        assert "this host gives at most" in detail["message"]
        host_cpus = int(detail["message"].split("at most ")[1].split()[0])
        assert 1 <= host_cpus < 8
    s = new(cpu_count=host_cpus, memory_mb=8192, disk_size_mb=10240)
    assert (s.cpu_count, s.memory_mb, s.disk_size_mb) == (host_cpus, 8192, 10240)
    cpus, mem_kib, disk_kib, _ = guest_facts(s)
    assert cpus == host_cpus
    assert 7.5 * 1024 * 1024 < mem_kib <= 8 * 1024 * 1024
    assert 9.5 * 1024 * 1024 < disk_kib <= 10.1 * 1024 * 1024, disk_kib


def test_workspace_is_the_editable_filesystem_root(sbx):
    """"/workspace is the editable filesystem root": commands start there and
    the sandbox's user can create, change and remove files in it."""
    r = sbx.exec.run("pwd; touch a && echo x > a && rm a && mkdir -p d/e && rmdir d/e d && echo ok")
    assert r.stdout == "/workspace\nok\n", r.stderr


def test_boots_from_a_versioned_template_miosa_sandbox_by_default__hearth_differs_named_default(client, sbx):
    """"Boots from a versioned template (miosa-sandbox by default)". Hearth's
    default template is `default` (Debian with Python); `miosa-sandbox` is
    accepted as its alias."""
    assert sbx.template_id == "default"
    assert sbx.template_version
    templates = client.request("GET", "/sandbox-templates").json()
    assert templates["default_template_id"] == "default"
    alias = client.sandboxes.create(template_id="miosa-sandbox", tags=sbx.tags)
    try:
        assert alias.template_id == "default"
        assert alias.template_version == sbx.template_version
    finally:
        alias.destroy()


@pytest.mark.parametrize("template", ["default", "minimal"])
def test_built_in_templates_are_cached_so_they_incur_no_boot_delay_penalty(new, template):
    """"Templates cached on every region — picking a built-in template
    incurs no boot-delay penalty": each built-in template's sandbox is
    restored from its template snapshot (written when the server starts),
    not cold-booted."""
    s = new(template_id=template)
    assert s.boot_path == "snapshot", (template, s.boot_path, s.boot_ms)
    assert s.exec.run("echo up").stdout == "up\n"


def test_auto_destroyed_after_timeout_sec_default_300_s(client):
    """"Auto-destroyed after timeout_sec of wall-clock time (default 300 s)".
    (The destruction itself: test_lifecycle.py.)"""
    s = client.sandboxes.create()
    try:
        assert s.timeout_sec == 300 and s.always_on is False
        assert 280_000 < s.timeout_remaining_ms <= 300_000
    finally:
        s.destroy()


def test_network_isolated_by_default_a_guest_cannot_reach_the_host(sbx):
    """"Network-isolated by default": the host's own services (here the very
    API serving this test, on the host's loopback, which QEMU's network
    maps to the guest's gateway 10.0.2.2) are out of the guest's reach."""
    port = urllib.parse.urlsplit(BASE_URL).port
    probe = (
        "python3 -c \"import socket,sys; s=socket.socket(); s.settimeout(3); "
        "sys.exit(s.connect_ex(('10.0.2.2', %d)))\"" % port
    )
    r = sbx.exec.run(probe)
    assert r.exit_code != 0, "the guest reached the host's API at 10.0.2.2:%d" % port
    # Control: the same probe succeeds against a port inside the guest.
    sbx.processes.start("python3 -m http.server 8123 --bind 127.0.0.1", name="control")
    wait_for(
        "the control server",
        lambda: sbx.exec.run(probe.replace("'10.0.2.2', %d" % port, "'127.0.0.1', 8123")).exit_code == 0,
        timeout=30,
        every=0.5,
    )


@pytest.mark.parametrize("path", ["/workspace", "/home/sandbox"])
def test_the_sandbox_user_owns_its_working_directories(sbx, path):
    """Where the agent's code goes (the filesystem layout's `/workspace` and
    the user home) belongs to the user commands run as."""
    r = sbx.exec.run("stat -c '%%U' %s; id -un" % path)
    owner, me = r.stdout.split()
    assert owner == me == "sandbox"
