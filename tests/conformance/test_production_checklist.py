"""Documentation section "Production checklist": the items that are
behaviours of the platform. (Idempotency's 24-hour window on a controlled
clock: crates/server/tests/api/idempotency.rs::idempotency_keys_last_24_hours.)"""

import uuid

from conftest import RUN_TAG
from hearth import ConflictError, ValidationError


def test_timeout_sec_can_be_set_explicitly_up_to_the_plan_max_of_86400(api):
    """"Set an explicit timeout_sec. The default is 300 s. ... until the
    plan-max (up to 86400 s)": one second past the max is refused."""
    r = api.post("/sandboxes", params={"wait": "false"}, json={"timeout_sec": 120, "tags": [RUN_TAG]})
    assert r.status_code == 202 and r.json()["data"]["timeout_sec"] == 120
    api.delete("/sandboxes/%s" % r.json()["data"]["id"])
    assert api.post("/sandboxes", json={"timeout_sec": 86401}).status_code == 422


def test_idempotency_key_deduplicates_creates_within_24_hours(client):
    """"Pass idempotency_key on sandboxes.create calls in agent retry loops.
    The platform deduplicates creates with the same key within a 24-hour
    window": a retry gets the same sandbox, and only one exists."""
    key = "conformance-%s" % uuid.uuid4()
    tag = "idem-%s" % uuid.uuid4().hex[:8]
    a = client.sandboxes.create(idempotency_key=key, tags=[RUN_TAG, tag])
    try:
        b = client.sandboxes.create(idempotency_key=key, tags=[RUN_TAG, tag])
        assert b.id == a.id
        assert [s.id for s in client.sandboxes.list(tags=[tag])] == [a.id]
        # The same key for a different create is a mistake, not a replay.
        try:
            client.sandboxes.create(idempotency_key=key, tags=[RUN_TAG, tag], memory_mb=512)
            raise AssertionError("a reused key with another body was accepted")
        except ConflictError as e:
            assert e.code == "idempotency_key_reused"
    finally:
        a.destroy()


def test_idempotency_key_in_the_body_or_the_header(api):
    """The key works as `idempotency_key` in the body (the documentation's
    form) and as the `Idempotency-Key` header (API.md)."""
    key = "conformance-%s" % uuid.uuid4()
    body = {"idempotency_key": key, "tags": [RUN_TAG]}
    one = api.post("/sandboxes", params={"wait": "false"}, json=body)
    two = api.post("/sandboxes", params={"wait": "false"}, json=body)
    assert one.json()["data"]["id"] == two.json()["data"]["id"]
    assert two.headers.get("idempotent-replayed") == "true"
    key2 = "conformance-%s" % uuid.uuid4()
    h = {"Idempotency-Key": key2}
    three = api.post("/sandboxes", params={"wait": "false"}, json={"tags": [RUN_TAG]}, headers=h)
    four = api.post("/sandboxes", params={"wait": "false"}, json={"tags": [RUN_TAG]}, headers=h)
    assert three.json()["data"]["id"] == four.json()["data"]["id"]
    for r in (one, three):
        api.delete("/sandboxes/%s" % r.json()["data"]["id"])


def test_an_empty_or_overlong_idempotency_key_is_422(api):
    for key in ("", "k" * 300):
        r = api.post("/sandboxes", json={"idempotency_key": key})
        assert r.status_code == 422, r.text


def test_secrets_are_passed_per_exec_or_through_the_secrets_api_not_env(client, new):
    """"Never store long-lived secrets in env — pass them per-exec or use
    the Secrets API": a secret bound through the Secrets API reaches the
    sandbox's commands, and its value is never returned by the API."""
    name = "CONF_SECRET_%s" % uuid.uuid4().hex[:6].upper()
    s = new()
    secret = client.secrets.create(name=name, value="v@lue-%s" % name)
    try:
        client.secrets.bind(secret.id, s.id, expose_as_env="CONF_TOKEN")
        value = "v@lue-%s" % name
        r = s.exec.run('test "$CONF_TOKEN" = "%s" && echo match; echo "$CONF_TOKEN"' % value)
        # The command has the value; its printed form is masked.
        assert r.stdout == "match\n***\n", r.stdout
        assert value not in str(client.secrets.get(secret.id).raw)
        assert "CONF_TOKEN" not in {v.key for v in s.env.list()}
        # Per exec: a secret for one call only.
        r = s.exec.run('test "$%s" = "%s" && echo once' % (name, value), secrets=[name])
        assert r.stdout == "once\n", r.stdout + r.stderr
    finally:
        client.secrets.delete(secret.id)


def test_the_plan_max_is_the_ceiling_of_timeout_sec_also_on_extend(api, new):
    """The ceiling holds when a deadline is moved too."""
    s = new(wait=False)
    r = api.post("/sandboxes/%s/extend" % s.id, json={"timeout_sec": 86401})
    assert r.status_code == 422, r.text


def test_sdk_validation_errors_name_the_field(client):
    try:
        client.sandboxes.create(timeout_sec=0)
        raise AssertionError("timeout_sec 0 accepted")
    except ValidationError as e:
        assert [d["field"] for d in e.details] == ["timeout_sec"]
