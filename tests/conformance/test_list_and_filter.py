"""List and filter sandboxes.

Documentation: "List and filter sandboxes" and, in the production
checklist, "Filter by external_workspace_id in your list calls to avoid
scanning your entire tenant's sandbox set."

The tenant holds the other tests' sandboxes too, so every query is
restricted to this module's sandboxes by a tag (or workspace ids) unique
to the run.
"""

import uuid

import pytest

from hearth import HearthError

from conftest import RUN_TAG

RUN = uuid.uuid4().hex[:8]
MINE = "list-%s" % RUN  # the tag of this module's sandboxes
WS1 = "ws-a-%s" % RUN
WS2 = "ws-b-%s" % RUN


@pytest.fixture(scope="module")
def fleet(client):
    """Three sandboxes: `a` (WS1; tags red; default template; running),
    `b` (WS1; red, blue; default; paused), `c` (WS2; blue; minimal;
    running)."""
    made = {}
    try:
        for key, ws, tags, tpl in (
            ("a", WS1, ["red"], None),
            ("b", WS1, ["red", "blue"], None),
            ("c", WS2, ["blue"], "minimal"),
        ):
            made[key] = client.sandboxes.create(
                tpl,
                tags=[RUN_TAG, MINE] + tags,
                timeout_sec=900,
                external_workspace_id=ws,
            )
        made["b"].pause()
        assert made["b"].state == "paused"
        yield {k: s.id for k, s in made.items()}
    finally:
        for s in made.values():
            try:
                s.destroy()
            except HearthError:
                pass


def ids(sandboxes):
    got = [s.id for s in sandboxes]
    assert len(got) == len(set(got)), "a sandbox listed twice: %s" % got
    return set(got)


def test_list_and_filter_sandboxes_by_tags_all_must_match(client, fleet):
    """"List and filter sandboxes" by `tags`: every tag given must be on
    a sandbox for it to be listed."""
    assert ids(client.sandboxes.list(tags=[MINE])) == {fleet["a"], fleet["b"], fleet["c"]}
    assert ids(client.sandboxes.list(tags=[MINE, "red"])) == {fleet["a"], fleet["b"]}
    assert ids(client.sandboxes.list(tags=[MINE, "blue"])) == {fleet["b"], fleet["c"]}
    assert ids(client.sandboxes.list(tags=[MINE, "red", "blue"])) == {fleet["b"]}
    assert ids(client.sandboxes.list(tags=[MINE, "green"])) == set()


def test_list_and_filter_sandboxes_by_state(client, fleet):
    """"List and filter sandboxes" by `state`."""
    assert ids(client.sandboxes.list(tags=[MINE], state="running")) == {fleet["a"], fleet["c"]}
    assert ids(client.sandboxes.list(tags=[MINE], state="paused")) == {fleet["b"]}
    assert ids(client.sandboxes.list(tags=[MINE], state="destroyed")) == set()
    for s in client.sandboxes.list(tags=[MINE], state="running"):
        assert s.state == "running"


def test_list_and_filter_sandboxes_by_template_id(client, fleet):
    """"List and filter sandboxes" by `template_id`."""
    assert ids(client.sandboxes.list(tags=[MINE], template_id="minimal")) == {fleet["c"]}
    assert ids(client.sandboxes.list(tags=[MINE], template_id="default")) == {fleet["a"], fleet["b"]}


def test_filter_by_external_workspace_id_in_list_calls(client, api, fleet):
    """"Filter by external_workspace_id in your list calls to avoid scanning
    your entire tenant's sandbox set": the filter is applied by the server
    (the page's `total` counts only the workspace's sandboxes, while the
    tenant holds more), with no tag needed, and combines with the other
    filters."""
    assert ids(client.sandboxes.list(external_workspace_id=WS1)) == {fleet["a"], fleet["b"]}
    assert ids(client.sandboxes.list(external_workspace_id=WS2)) == {fleet["c"]}
    assert ids(client.sandboxes.list(external_workspace_id="ws-none-%s" % RUN)) == set()
    assert ids(client.sandboxes.list(external_workspace_id=WS1, state="paused")) == {fleet["b"]}
    for s in client.sandboxes.list(external_workspace_id=WS1):
        assert s.external_workspace_id == WS1

    r = api.get("/sandboxes", params={"external_workspace_id": WS1})
    assert r.status_code == 200
    assert r.json()["page"]["total"] == 2
    everything = api.get("/sandboxes").json()["page"]["total"]
    assert everything > r.json()["page"]["total"]


def test_list_is_paginated(api, fleet):
    """A list is paginated (API.md: `{"data": [...], "page": {"page",
    "page_size", "total"}}`, query `page` and `page_size`): pages of 2 of
    this module's 3 sandboxes give 2 then 1, together each sandbox once;
    an out-of-range `page_size` is a 422 naming it."""
    q = {"tags": MINE, "page_size": 2}
    p1 = api.get("/sandboxes", params=dict(q, page=1)).json()
    p2 = api.get("/sandboxes", params=dict(q, page=2)).json()
    p3 = api.get("/sandboxes", params=dict(q, page=3)).json()
    assert p1["page"] == {"page": 1, "page_size": 2, "total": 3}
    assert p2["page"] == {"page": 2, "page_size": 2, "total": 3}
    assert len(p1["data"]) == 2 and len(p2["data"]) == 1 and p3["data"] == []
    listed = [d["id"] for d in p1["data"] + p2["data"]]
    assert sorted(listed) == sorted(fleet.values())

    default = api.get("/sandboxes", params={"tags": MINE}).json()
    assert default["page"]["page"] == 1 and default["page"]["page_size"] == 20

    r = api.get("/sandboxes", params={"page_size": 101})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"
    assert [d["field"] for d in r.json()["error"]["details"]] == ["page_size"]
