"""Documentation section "Sizing reference": every default and every range
edge, in and out. Out of range is refused before anything boots: a 422
naming the field."""

import pytest

from conftest import wait_state

DEFAULTS = {
    "cpu_count": 1,
    "memory_mb": 1024,
    "disk_size_mb": 3072,
    "timeout_sec": 300,
    "idle_timeout_sec": 0,
    "always_on": False,
}


def test_defaults_cpu_1_memory_1024_disk_3072_timeout_300_idle_0_always_on_false(api):
    """The table's "Default" column, as the API reports a sandbox created
    with no sizing at all."""
    r = api.post("/sandboxes", params={"wait": "false"}, json={})
    assert r.status_code == 202, r.text
    body = r.json()["data"]
    api.delete("/sandboxes/%s" % body["id"])
    assert {k: body[k] for k in DEFAULTS} == DEFAULTS


OUT_OF_RANGE = [
    ("cpu_count", 0),
    ("cpu_count", 9),
    ("memory_mb", 0),
    ("memory_mb", 8193),
    ("disk_size_mb", 0),
    ("disk_size_mb", 10241),
    ("timeout_sec", 0),
    ("timeout_sec", 86401),
    ("idle_timeout_sec", -1),
    ("idle_timeout_sec", 86401),
]


@pytest.mark.parametrize("field,value", OUT_OF_RANGE)
def test_a_value_outside_the_validation_range_is_422_naming_the_field(api, field, value):
    """"Validation range": one past each edge is refused."""
    r = api.post("/sandboxes", json={field: value})
    assert r.status_code == 422, r.text
    assert [d["field"] for d in r.json()["error"]["details"]] == [field]


@pytest.mark.parametrize("field,value", [("cpu_count", "2"), ("always_on", "yes"), ("memory_mb", 1.5)])
def test_a_value_of_the_wrong_type_is_422(api, field, value):
    r = api.post("/sandboxes", json={field: value})
    assert r.status_code == 422, r.text
    assert field in r.text


@pytest.mark.parametrize("field,low,edge", [("memory_mb", 1, 127), ("disk_size_mb", 1, 255)])
def test_memory_below_128_and_disk_below_256_are_refused__hearth_differs_ranges_start_at_128_mib_and_256_mib(api, field, low, edge):
    """The page's ranges start at 1 MiB; a VM cannot boot in 1 MiB of RAM,
    nor a root filesystem fit in 1 MiB, so Hearth's start at 128 MiB of
    memory and 256 MiB of disk, and says so."""
    for value in (low, edge):
        r = api.post("/sandboxes", json={field: value})
        assert r.status_code == 422, r.text
        (d,) = r.json()["error"]["details"]
        assert d["field"] == field
        assert ("between %d and" % (128 if field == "memory_mb" else 256)) in d["message"]


def test_the_lowest_edges_are_accepted(client, new):
    """cpu_count 1, memory_mb 128, disk_size_mb 256, timeout_sec 1 and
    idle_timeout_sec 0 are in range: such a sandbox runs (the `minimal`
    template: Debian does not fit in 256 MiB of disk)."""
    s = new(template_id="minimal", cpu_count=1, memory_mb=128, disk_size_mb=256, idle_timeout_sec=0)
    assert (s.cpu_count, s.memory_mb, s.disk_size_mb, s.idle_timeout_sec) == (1, 128, 256, 0)
    assert s.exec.run("echo small").stdout == "small\n"
    # timeout_sec = 1: accepted, and the sandbox is gone a second later.
    t = client.sandboxes.create(template_id="minimal", timeout_sec=1, wait=False)
    assert t.timeout_sec == 1
    wait_state(client, t.id, "destroyed", timeout=30)


def test_the_highest_timeouts_are_accepted(new):
    """timeout_sec 86400 and idle_timeout_sec 86400 are in range. (The
    highest cpu_count, memory_mb and disk_size_mb:
    test_what_a_sandbox_is.py.)"""
    s = new(timeout_sec=86400, idle_timeout_sec=86400)
    assert (s.timeout_sec, s.idle_timeout_sec) == (86400, 86400)
    s.refresh()
    assert s.timeout_remaining_ms > 86_000_000


def test_always_on_takes_true_and_false(new):
    """`always_on` | false | —: both values are taken and reported."""
    on = new(always_on=True, wait=False)
    off = new(always_on=False, wait=False)
    assert (on.always_on, off.always_on) == (True, False)
    on.refresh()
    assert on.timeout_remaining_ms is None
