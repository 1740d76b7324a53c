"""Billing notes.

Documentation: "Billing accrues from state = "running" until state =
"destroyed" or state = "paused"." — "Running: billed at the vCPU-second +
GiB-second rate for your plan", "Paused: billed at storage rate only (disk
GiB-second)", "Destroyed: billing stops immediately".

Hearth meters each sandbox (`sbx.usage()`, `GET /sandboxes/{id}/usage`):
`runtime_sec` and `provisioned_vcpu_ms` / `provisioned_memory_mb_ms`
(cpu_count × ms and memory_mb × ms spent running, snapshotting included),
`paused_disk_mb_ms` (disk_size_mb × ms spent paused) and
`estimated_cost_cents` (those times priced at the server's configured
rates). The same quantities as the documentation's vCPU-seconds,
GiB-seconds and disk GiB-seconds, in finer units.
"""

import datetime
import time

import pytest

from hearth import HearthError

from conftest import RUN_TAG

TICK = 2.0  # seconds watched in each state


def at_ms(ts):
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000.0


def watch(sbx, secs=TICK):
    """Usage before and after `secs` seconds, and the seconds the client
    measured between the two reads."""
    u1 = sbx.usage()
    t1 = time.monotonic()
    time.sleep(secs)
    u2 = sbx.usage()
    t2 = time.monotonic()
    return u1, u2, t2 - t1


def close_to(got, want, rel=0.2, slack=0.3):
    """`got` seconds within `rel` of `want`, plus `slack` seconds (the two
    reads are not instantaneous)."""
    return abs(got - want) <= rel * want + slack


def test_running_is_billed_at_the_vcpu_second_and_gib_second_rate(new):
    """"Running: billed at the vCPU-second + GiB-second rate for your plan":
    while a 2-vCPU, 512 MiB sandbox runs, its vCPU time grows by 2 × the
    time elapsed and its memory time by 512 MiB × the time elapsed (the
    running time itself tracking the wall clock), the estimated cost grows,
    and its paused-disk time does not."""
    s = new(cpu_count=2, memory_mb=512)
    assert (s.cpu_count, s.memory_mb) == (2, 512)
    u1, u2, dt = watch(s)
    assert u1.state == u2.state == "running" and u1.sandbox_id == s.id
    ran = u2.runtime_sec - u1.runtime_sec
    assert close_to(ran, dt), (ran, dt)
    ran_ms = ran * 1000.0
    assert u2.provisioned_vcpu_ms - u1.provisioned_vcpu_ms == pytest.approx(2 * ran_ms, abs=4)
    assert u2.provisioned_memory_mb_ms - u1.provisioned_memory_mb_ms == pytest.approx(512 * ran_ms, abs=1024)
    assert u2.paused_disk_mb_ms == u1.paused_disk_mb_ms == 0
    assert u2.estimated_cost_cents > u1.estimated_cost_cents


@pytest.fixture(scope="module")
def paused(client):
    """A default sandbox (disk 3072 MiB), paused, shared by the tests that
    only read its usage."""
    s = client.sandboxes.create(tags=[RUN_TAG], timeout_sec=900)
    try:
        s.pause()
        assert s.state == "paused"
        yield s
    finally:
        try:
            s.destroy()
        except HearthError:
            pass


def test_billing_accrues_from_running_until_paused(paused):
    """"Billing accrues from state = "running" until state = ...
    "paused"": the running time is the time from `started_at` to
    `paused_at`, and once paused the vCPU and memory time stay as they
    were."""
    s = paused.refresh()
    u1, u2, dt = watch(s)
    assert u1.state == u2.state == "paused"
    assert u1.runtime_sec * 1000.0 == pytest.approx(at_ms(s.paused_at) - at_ms(s.started_at), abs=500)
    assert u1.runtime_sec > 0 and u1.provisioned_vcpu_ms > 0
    assert u2.runtime_sec == u1.runtime_sec
    assert u2.provisioned_vcpu_ms == u1.provisioned_vcpu_ms
    assert u2.provisioned_memory_mb_ms == u1.provisioned_memory_mb_ms


def test_paused_is_billed_at_storage_rate_only(paused):
    """"Paused: billed at storage rate only (disk GiB-second)": while
    paused the disk time grows by disk_size_mb × the time elapsed, and the
    estimated cost grows far slower than while running (at least ten times
    slower, with the default rates: 0.02 ¢ per disk GiB-hour against 5 ¢
    per vCPU-hour + 1.25 ¢ per GiB-hour)."""
    s = paused
    assert s.disk_size_mb == 3072
    u1, u2, dt = watch(s)
    disk_ms = u2.paused_disk_mb_ms - u1.paused_disk_mb_ms
    assert close_to(disk_ms / s.disk_size_mb / 1000.0, dt), (disk_ms, dt)
    assert u2.provisioned_vcpu_ms == u1.provisioned_vcpu_ms

    running_rate = u1.estimated_cost_cents / u1.runtime_sec  # cents per running second
    paused_rate = (u2.estimated_cost_cents - u1.estimated_cost_cents) / dt
    assert 0 <= paused_rate < running_rate / 10, (paused_rate, running_rate)


def test_billing_stops_immediately_when_destroyed(client, new):
    """"Destroyed: billing stops immediately" (billing accrues "until state
    = destroyed"): the usage of a sandbox destroyed while running stops at
    `destroyed_at`, as does that of one destroyed while paused (its disk
    time), and nothing grows afterwards."""
    running, paused = new(), new()
    paused.pause()
    time.sleep(0.5)
    running.destroy()
    paused.destroy()
    assert running.state == paused.state == "destroyed"

    r = client.sandboxes.get(running.id)
    r_u = running.usage()
    assert r_u.runtime_sec * 1000.0 == pytest.approx(at_ms(r.destroyed_at) - at_ms(r.started_at), abs=500)
    p = client.sandboxes.get(paused.id)
    p_u = paused.usage()
    assert p_u.paused_disk_mb_ms / p.disk_size_mb == pytest.approx(
        at_ms(p.destroyed_at) - at_ms(p.paused_at), abs=500
    )

    time.sleep(1.5)
    for s, before in ((running, r_u), (paused, p_u)):
        after = s.usage()
        assert after.state == "destroyed"
        assert (
            after.runtime_sec,
            after.provisioned_vcpu_ms,
            after.provisioned_memory_mb_ms,
            after.paused_disk_mb_ms,
            after.estimated_cost_cents,
        ) == (
            before.runtime_sec,
            before.provisioned_vcpu_ms,
            before.provisioned_memory_mb_ms,
            before.paused_disk_mb_ms,
            before.estimated_cost_cents,
        )
