"""Previews — expose a port.

Documentation: "previews.create maps a sandbox port to a public HTTPS URL
managed by MIOSA. The URL is live as long as the sandbox is running." and
"Network-isolated by default; preview URLs open specific ports to the
internet". Requests go through the test server's preview proxy
(`preview_get`), as a browser on the internet would.
"""

import re
import urllib.parse

import pytest

from conftest import PREVIEW_URL, preview_get, serve_http, wait_state

PORT_A = 8101
PORT_B = 8102
BODY_A = "conformance preview: port A\n"
BODY_B = "conformance preview: port B\n"


@pytest.fixture(scope="module")
def two_servers(sbx):
    """The module's sandbox with two HTTP servers answering different
    bodies on two ports."""
    serve_http(sbx, PORT_A, BODY_A)
    serve_http(sbx, PORT_B, BODY_B)
    return sbx


def fresh_preview(sbx, port, visibility=None):
    """A new preview of `port` (Hearth keeps one preview per port: an
    earlier test's is deleted first)."""
    for old in sbx.previews.list():
        if old.port == port:
            sbx.previews.delete(old.id)
    if visibility is None:
        return sbx.previews.create(port)
    return sbx.previews.create(port, visibility=visibility)


def test_previews_create_maps_a_sandbox_port_to_a_public_url__hearth_differs_plain_http_on_the_operators_domain(
    two_servers,
):
    """"previews.create maps a sandbox port to a public HTTPS URL managed by
    MIOSA."

    Hearth differs: the URL is `http://<slug>.preview.<domain>[:port]` on
    the operator's own domain and the proxy's own port, in plain HTTP; TLS
    is left to a front proxy the operator runs (or the proxy's own
    certificate when configured). What the URL serves is what the guest's
    server on that port answers, to anyone (a public preview needs no
    credential). Hearth's previews are private unless created with
    `visibility="public"` (API.md; see the visibility test), which gives
    the documented public URL."""
    pv = fresh_preview(two_servers, PORT_A, "public")
    assert pv.port == PORT_A and pv.visibility == "public" and pv.slug
    proxy_port = urllib.parse.urlsplit(PREVIEW_URL).port
    assert re.fullmatch(r"http://%s\.preview\.localhost:%d" % (re.escape(pv.slug), proxy_port), pv.url), pv.url
    r = preview_get(pv.url)
    assert r.status_code == 200, r.text[:300]
    assert r.text == BODY_A
    # The guest's server saw the path asked for: the URL maps the port, not one page.
    r = preview_get(pv.url, path="/no-such-page")
    assert r.status_code == 404  # http.server's own answer, relayed


def test_preview_urls_open_specific_ports_to_the_internet(two_servers):
    """"Network-isolated by default; preview URLs open specific ports to the
    internet": each preview reaches its own port only. Two guest servers on
    two ports answer different bodies; the preview of port A always serves
    A's body and never B's, and the other way round; a host no preview
    owns reaches nothing."""
    a = fresh_preview(two_servers, PORT_A, "public")
    b = fresh_preview(two_servers, PORT_B, "public")
    assert a.url != b.url
    for _ in range(3):
        ra, rb = preview_get(a.url), preview_get(b.url)
        assert (ra.status_code, ra.text) == (200, BODY_A)
        assert (rb.status_code, rb.text) == (200, BODY_B)
    # No way from A's URL to B's port: a request naming B's port in its
    # Host header still lands on A's port.
    host_a = urllib.parse.urlsplit(a.url).hostname
    r = preview_get("http://%s:%d" % (host_a, PORT_B))
    assert (r.status_code, r.text) == (200, BODY_A)
    # A preview host that was never created opens nothing.
    r = preview_get("http://zzzznosuchpreview0000.preview.localhost")
    assert r.status_code == 404
    assert BODY_A not in r.text and BODY_B not in r.text


def test_the_preview_url_is_live_as_long_as_the_sandbox_is_running(client, new):
    """"The URL is live as long as the sandbox is running."

    Running: 200 with the app's answer. Paused: Hearth answers 503 (a page
    "The sandbox is not running"), not the app. Resumed: the app answers
    again (its server survived the pause). Destroyed: never the app again
    (503 "the sandbox is destroyed", or 404 were the preview removed)."""
    s = new()
    serve_http(s, PORT_A, BODY_A)
    pv = s.previews.create(PORT_A, visibility="public")
    r = preview_get(pv.url)
    assert (r.status_code, r.text) == (200, BODY_A)

    s.pause()
    wait_state(client, s.id, "paused")
    r = preview_get(pv.url)
    assert r.status_code != 200 and BODY_A not in r.text
    assert r.status_code == 503, (r.status_code, r.text[:300])

    s.resume()
    assert s.state == "running"
    r = preview_get(pv.url)
    assert (r.status_code, r.text) == (200, BODY_A)

    s.destroy()
    r = preview_get(pv.url)
    assert r.status_code != 200 and BODY_A not in r.text
    assert r.status_code in (404, 503), (r.status_code, r.text[:300])


def test_the_preview_url_is_live_as_long_as_the_sandbox_is_running__hearth_goes_further_a_request_wakes_a_paused_persistent_sandbox(
    client, new
):
    """"The URL is live as long as the sandbox is running."

    Hearth goes further: for a `persistent` sandbox (one that a timeout
    pauses instead of destroying), a request to its preview while it is
    paused resumes it first, and the app answers; a non-persistent
    sandbox stays paused (503, previous test)."""
    s = new(persistent=True)
    serve_http(s, PORT_A, BODY_A)
    pv = s.previews.create(PORT_A, visibility="public")
    s.pause()
    assert client.sandboxes.get(s.id).state == "paused"
    r = preview_get(pv.url, timeout=60.0)
    assert (r.status_code, r.text) == (200, BODY_A)
    assert client.sandboxes.get(s.id).state == "running"


def test_preview_visibility_private_needs_a_share_token_public_does_not(two_servers):
    """"See Previews for visibility controls": a `private` preview (the
    default visibility) refuses a request without a credential (401) and
    serves one with a share token from `previews.share`, in the
    `x-hearth-preview-token` header or the `preview_token` query parameter
    (a page request with it in its URL is redirected to the same URL
    without it, with a cookie holding the token that opens later
    requests); a wrong token is refused. A `public` preview serves anyone."""
    pv = fresh_preview(two_servers, PORT_B)
    assert pv.visibility == "private"
    r = preview_get(pv.url)
    assert r.status_code == 401, (r.status_code, r.text[:300])
    assert BODY_B not in r.text

    share = two_servers.previews.share(pv.id, ttl_seconds=600)
    assert share.token and share.token in share.share_url

    r = preview_get(pv.url, headers={"x-hearth-preview-token": share.token})
    assert (r.status_code, r.text) == (200, BODY_B)

    r = preview_get(pv.url, params={"preview_token": share.token})
    assert r.status_code == 303, (r.status_code, r.text[:300])
    assert share.token not in r.headers["location"]
    assert urllib.parse.urlsplit(r.headers["location"]).netloc == urllib.parse.urlsplit(pv.url).netloc
    cookie = r.headers["set-cookie"].split(";", 1)[0]
    assert share.token in cookie
    r = preview_get(pv.url, headers={"Cookie": cookie})
    assert (r.status_code, r.text) == (200, BODY_B)

    r = preview_get(pv.url, headers={"x-hearth-preview-token": share.token[:-4] + "0000"})
    assert r.status_code == 401 and BODY_B not in r.text

    public = fresh_preview(two_servers, PORT_B, "public")
    r = preview_get(public.url)
    assert (r.status_code, r.text) == (200, BODY_B)
