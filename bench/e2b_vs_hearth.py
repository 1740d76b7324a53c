"""Create -> first command through the official E2B SDK against Hearth,
and through Hearth's own SDK, against the same server in the same run
(alternating, so both see the same warm pool and host), running the same
command (E2B's SDK runs commands in a login bash, so Hearth's does too).
The floor is Hearth's own SDK; the target is a ratio <= 1.1.

    bench/run e2b          (starts a server; needs the debian image)
"""

import os
import statistics
import sys
import time

from e2b import Sandbox
from hearth import Hearth

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def e2b_round() -> float:
    t = time.perf_counter()
    s = Sandbox.create(template="base")
    r = s.commands.run("echo ready")
    took = time.perf_counter() - t
    assert r.stdout == "ready\n", r
    s.kill()
    return took


def hearth_round(client: Hearth) -> float:
    t = time.perf_counter()
    s = client.sandboxes.create("default")
    # What E2B's commands.run runs: a login bash.
    r = s.exec.run("/bin/bash -l -c 'echo ready'")
    took = time.perf_counter() - t
    assert r.stdout == "ready\n", r
    s.destroy()
    return took


def main() -> None:
    client = Hearth(api_key=os.environ["E2B_API_KEY"], base_url=os.environ["HEARTH_BASE_URL"])
    # One of each first: the template snapshot and the pool warm up.
    e2b_round()
    hearth_round(client)
    e2b, own = [], []
    for _ in range(ROUNDS):
        e2b.append(e2b_round())
        own.append(hearth_round(client))
    e, h = statistics.median(e2b), statistics.median(own)
    print(f"create -> first command, {ROUNDS} rounds, medians")
    print(f"  Hearth SDK (floor)   {h * 1000:7.0f} ms")
    print(f"  E2B SDK              {e * 1000:7.0f} ms   ratio {e / h:.2f} (target <= 1.1)")


if __name__ == "__main__":
    main()
