"""The vault, scoped tokens and the audit log: what the client sends and
how it reads the answers (the server is a MockTransport)."""

import httpx

import hearth

from conftest import Recorder, ok


def client(*responses):
    rec = Recorder(*responses)
    c = hearth.Hearth(api_key="hk_test", base_url="http://hearth.test",
                      transport=httpx.MockTransport(rec), retry_backoff=0)
    return c, rec


SECRET = {"id": "sec_1", "name": "gh", "type": "api_key", "scope": "user", "value_prefix": "ghp_",
          "last4": "WXYZ", "expose_as_env": "GITHUB_TOKEN", "resource_id": "sbx_1",
          "resource_type": "sandbox", "metadata": {}, "created_at": "2026-12-05T00:00:00.000Z"}


def test_create_binds_when_given_a_sandbox_and_never_keeps_the_value():
    c, rec = client(ok(SECRET, status=201))
    s = c.secrets.create("gh", "ghp_secret_value_WXYZ", expose_as_env="GITHUB_TOKEN", sandbox_id="sbx_1")
    req = rec.requests[0]
    assert (req.method, req.url.path) == ("POST", "/api/v1/egress/secrets")
    assert rec.json() == {"name": "gh", "value": "ghp_secret_value_WXYZ", "type": "api_key", "scope": "user",
                          "expose_as_env": "GITHUB_TOKEN", "resource_id": "sbx_1", "resource_type": "sandbox"}
    assert isinstance(s, hearth.Secret) and s.last4 == "WXYZ"
    assert "ghp_secret_value" not in repr(s)


def test_rotate_bind_unbind_and_per_call_secrets():
    c, rec = client(ok(SECRET), ok({"id": "sbd_1", "secret_id": "sec_1", "resource_id": "sbx_2",
                                    "resource_type": "sandbox", "expose_as_env": "X"}, status=201),
                    ok({"id": "sbd_1", "deleted": True}))
    c.secrets.rotate("sec_1", "new-value")
    assert (rec.requests[0].method, rec.requests[0].url.path) == ("PATCH", "/api/v1/egress/secrets/sec_1")
    assert rec.json(0) == {"value": "new-value"}
    b = c.secrets.bind("sec_1", "sbx_2", "X")
    assert isinstance(b, hearth.SecretBinding) and b.expose_as_env == "X"
    c.secrets.unbind("sbd_1")
    assert (rec.requests[2].method, rec.requests[2].url.path) == ("DELETE", "/api/v1/egress/bindings/sbd_1")


def test_tokens_mint_with_their_scopes_and_show_the_secret_once():
    minted = {"id": "stk_1", "token": "hk_st_abc", "scopes": ["sandboxes:exec"], "sandbox_ids": ["sbx_1"],
              "user_id": "u", "workspace_id": "w", "expires_at": "2026-12-05T01:00:00.000Z"}
    c, rec = client(ok(minted, status=201))
    t = c.tokens.create("u", "w", scopes=["sandboxes:exec"], sandbox_ids=["sbx_1"], expires_in_seconds=60)
    assert rec.json() == {"user_id": "u", "workspace_id": "w", "expires_in_seconds": 60,
                          "scopes": ["sandboxes:exec"], "sandbox_ids": ["sbx_1"]}
    assert t.token == "hk_st_abc" and t.scopes == ["sandboxes:exec"]


def test_audit_iter_follows_the_cursor_to_the_last_page():
    page1 = httpx.Response(200, json={"data": [{"id": "aud_1", "type": "sandbox.exec", "cursor": "1"}],
                                      "next_cursor": "1"})
    page2 = httpx.Response(200, json={"data": [{"id": "aud_2", "type": "sandbox.exec", "cursor": "2"}],
                                      "next_cursor": None})
    c, rec = client(page1, page2)
    got = [e.id for e in c.audit.iter(sandbox_id="sbx_1", type="sandbox.exec", limit=1)]
    assert got == ["aud_1", "aud_2"]
    q1, q2 = (dict(r.url.params) for r in rec.requests)
    assert q1 == {"limit": "1", "type": "sandbox.exec", "resource_type": "sandbox", "resource_id": "sbx_1"}
    assert q2["after"] == "1"


def test_deploy_sends_its_body_and_reads_the_result():
    answer = {"deployment": {"id": "dep_1", "name": "site", "public_url": "http://x.apps.localhost:1"},
              "version": {"id": "dpv_1", "version_number": 1, "state": "active"}, "promoted": True}
    c, rec = client(ok({**SBX_MIN}), ok(answer, status=201))
    sbx = c.sandboxes.get("sbx_1")
    r = sbx.deploy(8080, "python3 -m http.server 8080", name="site")
    req = rec.requests[1]
    assert (req.method, req.url.path) == ("POST", "/api/v1/sandboxes/sbx_1/deploy")
    assert rec.json(1) == {"name": "site", "port": 8080, "start_command": "python3 -m http.server 8080",
                           "health_check_path": "/", "promote": True}
    assert r.promoted and r.deployment.public_url.endswith(":1") and r.version.version_number == 1


SBX_MIN = {"id": "sbx_1", "state": "running", "template_id": "minimal"}
