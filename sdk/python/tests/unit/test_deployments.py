"""Deployments: publishing with builds, replicas and domains, list
filters, scaling, the start command's env, custom domains and logs: what
the client sends and how it reads the answers (the server is a
MockTransport)."""

import pytest

import hearth
from hearth import ConflictError, CustomDomain, Deployment, DeploymentVersion

from conftest import err, ok

SBX_MIN = {"id": "sbx_1", "state": "running", "template_id": "minimal"}
DEP = {
    "id": "dep_1", "tenant_id": "default", "name": "site", "slug": "site", "state": "running",
    "active_version_id": "dpv_1", "public_url": "http://site.apps.localhost:7071",
    "custom_domain_id": None, "run_command": "busybox httpd -f -p 8080", "replicas": 2,
    "instance_ids": ["sbx_i1", "sbx_i2"], "metadata": {}, "external_workspace_id": "ws",
    "external_user_id": "u", "external_project_id": "p",
    "created_at": "2026-12-05T00:00:00.000Z", "updated_at": "2026-12-05T00:00:01.000Z",
}
VERSION = {
    "id": "dpv_1", "deployment_id": "dep_1", "version_number": 1, "kind": "sandbox_backed",
    "state": "active", "source_sandbox_id": "sbx_1", "runtime_command": "busybox httpd -f -p 8080",
    "runtime_port": 8080, "health_check_path": "/", "build_command": "make", "build_log": "built\n",
    "output_path": "/workspace/www", "error": None, "promoted_at": "2026-12-05T00:00:01.000Z",
    "created_at": "2026-12-05T00:00:00.000Z",
}
DOMAIN = {
    "id": "dom_1", "deployment_id": "dep_1", "domain": "app.example.com", "state": "pending",
    "verification": {"type": "TXT", "name": "_hearth-challenge.app.example.com",
                     "value": "hearth-verify=abc"},
    "has_certificate": False, "created_at": "2026-12-05T00:00:00.000Z", "verified_at": None,
}


def read_timeout(req):
    return req.extensions["timeout"]["read"]


# ---------------------------------------------------------------- publish

def test_deploy_sends_the_new_fields_and_reads_replicas_build_and_domain(make_client):
    answer = {"deployment": DEP, "version": VERSION, "promoted": True, "custom_domain": DOMAIN}
    c, rec = make_client(ok(SBX_MIN), ok(answer, status=201))
    sbx = c.sandboxes.get("sbx_1")
    r = sbx.deploy(8080, "busybox httpd -f -p 8080", name="site", build_command="make",
                   output_path="/workspace/www", replicas=2, domain="site",
                   custom_domain="app.example.com", external_workspace_id="ws",
                   external_user_id="u", external_project_id="p")
    req = rec.requests[1]
    assert (req.method, req.url.path) == ("POST", "/api/v1/sandboxes/sbx_1/deploy")
    assert rec.json(1) == {
        "name": "site", "port": 8080, "start_command": "busybox httpd -f -p 8080",
        "health_check_path": "/", "promote": True, "build_command": "make",
        "output_path": "/workspace/www", "replicas": 2, "domain": "site",
        "custom_domain": "app.example.com", "external_workspace_id": "ws",
        "external_user_id": "u", "external_project_id": "p",
    }
    # A build may run up to the server's default build timeout before the health checks.
    assert read_timeout(req) >= 90 + 120 + 900
    d = r.deployment
    assert isinstance(d, Deployment) and d.replicas == 2 and d.instance_ids == ["sbx_i1", "sbx_i2"]
    assert d.run_command == "busybox httpd -f -p 8080" and d.custom_domain_id is None
    assert (d.external_workspace_id, d.external_user_id, d.external_project_id) == ("ws", "u", "p")
    v = r.version
    assert isinstance(v, DeploymentVersion)
    assert (v.build_command, v.build_log, v.output_path) == ("make", "built\n", "/workspace/www")
    assert isinstance(r.custom_domain, CustomDomain) and r.custom_domain.id == "dom_1"
    assert r.custom_domain.state == "pending" and not r.custom_domain.verified
    assert r.custom_domain.verification["name"] == "_hearth-challenge.app.example.com"


def test_deploy_sends_no_new_field_unless_given_and_reads_an_older_server(make_client):
    old = {"deployment": {"id": "dep_1", "name": "site", "state": "running"},
           "version": {"id": "dpv_1", "version_number": 2, "state": "active"}, "promoted": True}
    c, rec = make_client(ok(SBX_MIN), ok(old, status=201))
    r = c.sandboxes.get("sbx_1").deploy(8080, "serve", deployment_id="dep_1", health_timeout_sec=30)
    assert rec.json(1) == {"deployment_id": "dep_1", "port": 8080, "start_command": "serve",
                           "health_check_path": "/", "health_timeout_sec": 30, "promote": True}
    assert 30 + 120 <= read_timeout(rec.requests[1]) < 900
    d, v = r.deployment, r.version
    assert d.replicas is None and d.instance_ids == [] and d.run_command is None
    assert d.external_workspace_id is None and d.custom_domain_id is None
    assert v.build_command is None and v.build_log is None and v.output_path is None
    assert r.custom_domain is None


def test_deploy_answer_with_a_null_custom_domain(make_client):
    c, rec = make_client(ok(SBX_MIN),
                         ok({"deployment": DEP, "version": VERSION, "promoted": False,
                             "custom_domain": None}, status=201))
    r = c.sandboxes.get("sbx_1").deploy(8080, "serve", name="site")
    assert r.custom_domain is None and not r.promoted


def test_publish_sends_the_source_and_only_the_fields_given(make_client):
    answer = {"deployment": DEP, "version": VERSION, "promoted": True, "custom_domain": None}
    c, rec = make_client(ok(answer, status=201))
    r = c.deployments.publish("dep_1", "sbx_2", 8080, "serve", replicas=3, output_path="/srv",
                              build_command="make", custom_domain="app.example.com",
                              external_project_id="p")
    req = rec.requests[0]
    assert (req.method, req.url.path) == ("POST", "/api/v1/deployments/dep_1/publish")
    assert rec.json() == {"source_sandbox_id": "sbx_2", "port": 8080, "start_command": "serve",
                          "health_check_path": "/", "promote": True, "build_command": "make",
                          "output_path": "/srv", "replicas": 3, "custom_domain": "app.example.com",
                          "external_project_id": "p"}
    assert read_timeout(req) >= 90 + 120 + 900
    assert r.promoted and r.deployment.id == "dep_1" and r.version.build_log == "built\n"

    c, rec = make_client(ok(answer, status=201))
    c.deployments.publish("dep_1", "sbx_2", 8080, "serve", promote=False)
    assert rec.json() == {"source_sandbox_id": "sbx_2", "port": 8080, "start_command": "serve",
                          "health_check_path": "/", "promote": False}


# ---------------------------------------------------------------- list, update, scale

def test_list_filters(make_client):
    c, rec = make_client(ok([DEP]), ok([]))
    got = c.deployments.list(state="running", external_workspace_id="ws", external_user_id="u",
                             external_project_id="p")
    assert [d.id for d in got] == ["dep_1"] and got[0].replicas == 2
    req = rec.requests[0]
    assert (req.method, req.url.path) == ("GET", "/api/v1/deployments")
    assert dict(req.url.params) == {"state": "running", "external_workspace_id": "ws",
                                    "external_user_id": "u", "external_project_id": "p"}
    assert c.deployments.list(external_project_id="p") == []
    assert dict(rec.requests[1].url.params) == {"external_project_id": "p"}


def test_list_without_filters_sends_no_query(make_client):
    c, rec = make_client(ok([]))
    c.deployments.list()
    assert rec.requests[0].url.query == b""


def test_update_sends_only_what_is_given(make_client):
    c, rec = make_client(ok(dict(DEP, name="renamed")), ok(dict(DEP, metadata={})))
    d = c.deployments.update("dep_1", name="renamed")
    req = rec.requests[0]
    assert (req.method, req.url.path) == ("PATCH", "/api/v1/deployments/dep_1")
    assert rec.json(0) == {"name": "renamed"} and d.name == "renamed"
    # Not a scale: the client's usual timeout.
    assert read_timeout(req) == c.timeout.read
    c.deployments.update("dep_1", metadata={})  # an empty mapping clears the metadata
    assert rec.json(1) == {"metadata": {}}


def test_scale_patches_replicas_and_waits_for_health_checks(make_client):
    c, rec = make_client(ok(dict(DEP, replicas=1, instance_ids=["sbx_i1"])), ok(DEP))
    d = c.deployments.scale("dep_1", 1)
    req = rec.requests[0]
    assert (req.method, req.url.path) == ("PATCH", "/api/v1/deployments/dep_1")
    assert rec.json(0) == {"replicas": 1}
    assert read_timeout(req) >= 210
    assert isinstance(d, Deployment) and d.replicas == 1 and d.instance_ids == ["sbx_i1"]
    c.deployments.update("dep_1", name="site", metadata={"k": "v"}, replicas=2)
    assert rec.json(1) == {"name": "site", "metadata": {"k": "v"}, "replicas": 2}


def test_scale_refused_by_the_quota_is_raised(make_client):
    c, _ = make_client(err(422, "validation_error",
                           details=[{"field": "replicas", "message": "must be between 1 and 20"}]))
    with pytest.raises(hearth.ValidationError) as e:
        c.deployments.scale("dep_1", 21)
    assert e.value.details[0]["field"] == "replicas"


# ---------------------------------------------------------------- env

def test_get_and_set_env(make_client):
    c, rec = make_client(ok({"deployment_id": "dep_1", "env": {"A": "1"}}),
                         ok({"deployment_id": "dep_1", "env": {"GREETING": "hello"}}),
                         ok({"deployment_id": "dep_1", "env": {}}))
    assert c.deployments.get_env("dep_1") == {"A": "1"}
    assert (rec.requests[0].method, rec.requests[0].url.path) == ("GET", "/api/v1/deployments/dep_1/env")
    assert c.deployments.set_env("dep_1", {"GREETING": "hello"}) == {"GREETING": "hello"}
    req = rec.requests[1]
    assert (req.method, req.url.path) == ("PUT", "/api/v1/deployments/dep_1/env")
    assert rec.json(1) == {"env": {"GREETING": "hello"}}
    assert c.deployments.set_env("dep_1", {}) == {}
    assert rec.json(2) == {"env": {}}


def test_set_env_is_retried_as_a_put(make_client):
    c, rec = make_client(err(503, "unavailable"), ok({"deployment_id": "dep_1", "env": {"A": "1"}}))
    assert c.deployments.set_env("dep_1", {"A": "1"}) == {"A": "1"}
    assert [r.method for r in rec.requests] == ["PUT", "PUT"]


# ---------------------------------------------------------------- custom domains

def test_domain_add_sends_the_domain_and_reads_the_challenge(make_client):
    c, rec = make_client(ok(DOMAIN, status=201), ok(dict(DOMAIN, has_certificate=True), status=201))
    d = c.deployments.domains.add("dep_1", "app.example.com")
    req = rec.requests[0]
    assert (req.method, req.url.path) == ("POST", "/api/v1/deployments/dep_1/domains")
    assert rec.json(0) == {"domain": "app.example.com"}
    assert isinstance(d, CustomDomain) and d.id == "dom_1" and d.deployment_id == "dep_1"
    assert d.state == "pending" and not d.verified and not d.has_certificate
    assert d.verification == {"type": "TXT", "name": "_hearth-challenge.app.example.com",
                              "value": "hearth-verify=abc"}
    assert not d.deleted and d.raw["verified_at"] is None
    d = c.deployments.domains.add("dep_1", "app.example.com", certificate_pem="CERT",
                                  private_key_pem="KEY")
    assert rec.json(1) == {"domain": "app.example.com", "certificate_pem": "CERT",
                           "private_key_pem": "KEY"}
    assert d.has_certificate


def test_domain_list_verify_delete(make_client):
    verified = dict(DOMAIN, state="verified", verified_at="2026-12-05T00:00:02.000Z")
    c, rec = make_client(ok([DOMAIN]), ok(verified), ok(dict(verified, deleted=True)))
    (d,) = c.deployments.domains.list("dep_1")
    assert (rec.requests[0].method, rec.requests[0].url.path) == ("GET", "/api/v1/deployments/dep_1/domains")
    assert d.domain == "app.example.com"
    v = c.deployments.domains.verify("dep_1", "dom_1")
    req = rec.requests[1]
    assert (req.method, req.url.path) == ("POST", "/api/v1/deployments/dep_1/domains/dom_1/verify")
    assert v.verified and v.verified_at == "2026-12-05T00:00:02.000Z"
    gone = c.deployments.domains.delete("dep_1", "dom_1")
    req = rec.requests[2]
    assert (req.method, req.url.path) == ("DELETE", "/api/v1/deployments/dep_1/domains/dom_1")
    assert gone.deleted and gone.id == "dom_1"


@pytest.mark.parametrize("code", ["domain_not_verified", "domain_taken"])
def test_domain_verify_refusals_are_conflicts(make_client, code):
    c, rec = make_client(err(409, code, "no TXT record at _hearth-challenge.app.example.com"))
    with pytest.raises(ConflictError) as e:
        c.deployments.domains.verify("dep_1", "dom_1")
    assert e.value.code == code and e.value.status == 409
    assert len(rec.requests) == 1  # a POST without an idempotency key is not retried


def test_domain_list_of_a_deployment_without_domains(make_client):
    c, _ = make_client(ok([]))
    assert c.deployments.domains.list("dep_1") == []


# ---------------------------------------------------------------- logs, usage

def test_deployment_and_instance_logs(make_client):
    c, rec = make_client(ok({"stdout": "a\n", "stderr": ""}), ok({"stdout": "", "stderr": "b\n"}))
    assert c.deployments.logs("dep_1", lines=5) == {"stdout": "a\n", "stderr": ""}
    req = rec.requests[0]
    assert (req.method, req.url.path, dict(req.url.params)) == (
        "GET", "/api/v1/deployments/dep_1/logs", {"lines": "5"})
    assert c.deployments.instance_logs("dep_1", "sbx_i1") == {"stdout": "", "stderr": "b\n"}
    req = rec.requests[1]
    assert (req.method, req.url.path, dict(req.url.params)) == (
        "GET", "/api/v1/deployments/dep_1/runtime-instances/sbx_i1/logs", {"lines": "200"})


def test_usage_grouped_by_deployment(make_client):
    c, rec = make_client(ok({"group_by": "deployment_id",
                             "groups": [{"key": "dep_1", "runtime_sec": 3.0}]}))
    rep = c.usage.get(group_by="deployment_id")
    assert dict(rec.requests[0].url.params) == {"group_by": "deployment_id"}
    assert rep.group_by == "deployment_id" and [g.key for g in rep.groups] == ["dep_1"]


# ---------------------------------------------------------------- async

async def test_async_deployments(make_async_client):
    answer = {"deployment": DEP, "version": VERSION, "promoted": True, "custom_domain": DOMAIN}
    c, rec = make_async_client(
        ok(SBX_MIN), ok(answer, status=201), ok([DEP]),
        ok(dict(DEP, replicas=1, instance_ids=["sbx_i1"])),
        ok({"deployment_id": "dep_1", "env": {"A": "1"}}),
        ok({"deployment_id": "dep_1", "env": {"A": "1"}}),
        ok(DOMAIN, status=201), ok([DOMAIN]), ok(dict(DOMAIN, deleted=True)),
        ok({"stdout": "x", "stderr": ""}),
    )
    sbx = await c.sandboxes.get("sbx_1")
    r = await sbx.deploy(8080, "serve", name="site", replicas=2, build_command="make")
    assert rec.json(1)["replicas"] == 2 and rec.json(1)["build_command"] == "make"
    assert r.version.build_log == "built\n" and r.custom_domain.id == "dom_1"
    (d,) = await c.deployments.list(external_user_id="u")
    assert dict(rec.requests[2].url.params) == {"external_user_id": "u"} and d.replicas == 2
    d = await c.deployments.scale("dep_1", 1)
    assert rec.requests[3].method == "PATCH" and rec.json(3) == {"replicas": 1} and d.replicas == 1
    assert await c.deployments.set_env("dep_1", {"A": "1"}) == {"A": "1"}
    assert rec.requests[4].method == "PUT" and rec.json(4) == {"env": {"A": "1"}}
    assert await c.deployments.get_env("dep_1") == {"A": "1"}
    dom = await c.deployments.domains.add("dep_1", "app.example.com")
    assert rec.json(6) == {"domain": "app.example.com"} and dom.state == "pending"
    assert [x.id for x in await c.deployments.domains.list("dep_1")] == ["dom_1"]
    assert (await c.deployments.domains.delete("dep_1", "dom_1")).deleted
    assert rec.requests[8].method == "DELETE"
    assert await c.deployments.instance_logs("dep_1", "sbx_i1", lines=3) == {"stdout": "x", "stderr": ""}
    assert rec.requests[9].url.path == "/api/v1/deployments/dep_1/runtime-instances/sbx_i1/logs"
    await c.aclose()


def test_deploy_without_waiting_sends_wait_false_and_reads_the_building_version(make_client):
    building = dict(VERSION, state="building", build_log=None, promoted_at=None)
    answer = {"deployment": DEP, "version": building, "promoted": False, "custom_domain": None}
    c, rec = make_client(ok(SBX_MIN), ok(answer, status=202), ok(VERSION))
    sbx = c.sandboxes.get("sbx_1")
    r = sbx.deploy(8080, "busybox httpd -f -p 8080", deployment_id="dep_1", build_command="make",
                   wait=False)
    assert rec.json(1)["wait"] is False
    assert (r.promoted, r.version.state) == (False, "building")
    # Not waiting: no long read timeout for the build.
    assert read_timeout(rec.requests[1]) < 900
    v = c.deployments.version("dep_1", "dpv_1")
    req = rec.requests[2]
    assert (req.method, req.url.path) == ("GET", "/api/v1/deployments/dep_1/versions/dpv_1")
    assert (v.state, v.build_log) == ("active", "built\n")


def test_waiting_is_the_default_and_not_sent(make_client):
    answer = {"deployment": DEP, "version": VERSION, "promoted": True, "custom_domain": None}
    c, rec = make_client(ok(SBX_MIN), ok(answer, status=201))
    c.sandboxes.get("sbx_1").deploy(8080, "x", name="site")
    assert "wait" not in rec.json(1)
