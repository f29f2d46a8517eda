"""Keys bound to a caller's mesh identity or verified JWT, against real Envoy: mesh workloads call the gateway
without a shared secret.

The ingress listener terminates TLS and verifies client certificates against a test mesh CA, the way an Istio
sidecar's inbound listener does; workload certificates carry Istio's SPIFFE identity as their URI SAN
(`spiffe://cluster.local/ns/<ns>/sa/<sa>`), which Envoy exposes as `connection.uri_san_peer_certificate`. A second
TLS listener accepts connections without a certificate (a certificate, when presented, is still verified). Envoy's
`jwt_authn` filter runs before the router with a local JWKS and `payload_in_metadata: payload`; the router reads
the verified `iss`/`sub` from dynamic metadata. Certificates and the RS256 token are made with the openssl CLI.

What is checked: certificate A gets key A's policy (its model allowed, another refused as the access checks answer),
B gets B's, no certificate or an unknown SAN gets 401, a certificate from another CA never gets through the
handshake, a bearer key still works (and stays authoritative) over TLS, identity-looking headers select nothing,
and a verified JWT selects its key."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from .support import client
from .support.checks import expect_error, expect_no_secrets, expect_upstream
from .support.envoy import bootstrap, clusters_for
from .support.plugin import chat, deployment, plugin_config

RESEARCH_ID = "spiffe://cluster.local/ns/research/sa/app"
FINANCE_ID = "spiffe://cluster.local/ns/finance/sa/app"
OTHER_ID = "spiffe://cluster.local/ns/other/sa/app"
ISSUER = "https://idp.test"
AUDIENCE = "llm-gateway"
MASTER = "sk-master-2b7e"
SUPPORT = "sk-support-9c1d"
FINANCE = "sk-finance-4f02"
PROVIDER = "sk-provider-51ab"
CHAT = "/v1/chat/completions"


def sha256_hex(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl(*args: str, cwd: Path, data: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, input=data, timeout=60).stdout


class Pki:
    """A mesh CA, the gateway's server certificate, workload certificates, a foreign CA, and a JWT signing key."""

    EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")

    def __init__(self, d: Path):
        self.d = d
        self._ca("mesh-ca")
        self._ca("foreign-ca")
        self._leaf("server", "mesh-ca", "DNS:localhost,IP:127.0.0.1", "serverAuth")
        self._leaf("research", "mesh-ca", f"URI:{RESEARCH_ID},DNS:app.research.svc.cluster.local", "clientAuth")
        self._leaf("finance", "mesh-ca", f"URI:{FINANCE_ID}", "clientAuth")
        self._leaf("other", "mesh-ca", f"URI:{OTHER_ID}", "clientAuth")
        self._leaf("dns-only", "mesh-ca", "DNS:app.research.svc.cluster.local", "clientAuth")
        self._leaf("forged", "foreign-ca", f"URI:{RESEARCH_ID}", "clientAuth")  # research's SAN, wrong CA
        openssl("genrsa", "-out", "jwt.key", "2048", cwd=d)
        modulus = openssl("rsa", "-in", "jwt.key", "-noout", "-modulus", cwd=d).decode().strip().split("=", 1)[1]
        self.jwks = {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k1",
                               "n": b64url(bytes.fromhex(modulus)), "e": b64url((65537).to_bytes(3, "big"))}]}

    def _ca(self, name: str) -> None:
        openssl("req", "-x509", *self.EC, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
                "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.d)

    def _leaf(self, name: str, ca: str, san: str, usage: str) -> None:
        openssl("req", *self.EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/O=mesh/CN={name}",
                cwd=self.d)
        (self.d / f"{name}.ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                                            f"extendedKeyUsage={usage}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=self.d)

    def path(self, name: str) -> str:
        return str(self.d / name)

    def token(self, sub: str, iss: str = ISSUER, exp_in: int = 3600) -> str:
        """An RS256 JWT signed with the JWKS's key."""
        header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "k1"}).encode())
        payload = b64url(json.dumps({"iss": iss, "sub": sub, "aud": AUDIENCE,
                                     "exp": int(time.time()) + exp_in}).encode())
        signature = openssl("dgst", "-sha256", "-sign", "jwt.key", cwd=self.d, data=f"{header}.{payload}".encode())
        return f"{header}.{payload}.{b64url(signature)}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("mesh-pki"))


def gateway_config(oa_url: str) -> dict:
    base = oa_url + "/v1"
    cfg = plugin_config(
        [deployment("gpt-4o", "openai/gpt-4o", base, api_key=PROVIDER, id="gpt4o"),
         deployment("gpt-4o-mini", "openai/gpt-4o-mini", base, api_key=PROVIDER, id="mini"),
         deployment("o3", "openai/o3", base, api_key=PROVIDER, id="o3")],
        master_key=MASTER)
    cfg["keys"] = [
        # Only a mesh binding: the research namespace's workload needs no key at all.
        {"key_alias": "research-app", "models": ["gpt-4o"], "mesh_principals": [RESEARCH_ID]},
        # A token and bindings: the finance workload by certificate or by its IdP's JWT, its humans by key.
        {"key_alias": "finance-app", "token": sha256_hex(FINANCE), "models": ["gpt-4o-mini"],
         "mesh_principals": [FINANCE_ID], "jwt_subjects": [{"iss": ISSUER, "sub": "finance-batch"}]},
        {"key_alias": "support-bot", "token": sha256_hex(SUPPORT), "models": ["o3"]},
    ]
    return cfg


JWT_HEADER = "x-identity-token"


def jwt_authn(pki: Pki) -> dict:
    """Envoy's JWT filter as Istio's RequestAuthentication configures it (payload in metadata under `payload`,
    the token not forwarded); a request without a token passes on (allow_missing), a bad one is Envoy's 401.
    The token travels in its own header: from `Authorization` (the default), jwt_authn would refuse every
    `Bearer sk-...` virtual key as a malformed JWT (measured: 401 `Jwt is not in the form of
    Header.Payload.Signature with two dots and 3 sections`), also with allow_missing."""
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"idp": {"issuer": ISSUER, "audiences": [AUDIENCE], "forward": False,
                              "from_headers": [{"name": JWT_HEADER}],
                              "local_jwks": {"inline_string": json.dumps(pki.jwks)},
                              "payload_in_metadata": "payload",
                              "claim_to_headers": [{"header_name": "x-jwt-sub", "claim_name": "sub"}]}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
            {"provider_name": "idp"}, {"allow_missing": {}}]}}}]}}


def tls_socket(pki: Pki, require_client_certificate: bool) -> dict:
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": require_client_certificate,
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": pki.path("server.pem")},
                                  "private_key": {"filename": pki.path("server.key")}}],
            "validation_context": {"trusted_ca": {"filename": pki.path("mesh-ca.pem")}}}}}


def mesh_static_resources(cfg: dict, clusters: dict, pki: Pki) -> dict:
    """The harness's bootstrap with the ingress listener behind mTLS (client certificates required), the same
    listener with optional client certificates (`ingress_optional`), and jwt_authn before the router on both."""
    boot = bootstrap(cfg, clusters)
    static = boot["static_resources"]
    ingress = static["listeners"][0]
    hcm = ingress["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(0, jwt_authn(pki))
    # As an Istio sidecar's inbound listener: the peer's certificate is appended to x-forwarded-client-cert, and
    # a client-sent one is kept (Envoy's default would sanitise it): the filter must not take it as an identity,
    # and must not forward it (the mesh's workload identities) to a provider.
    hcm["forward_client_cert_details"] = "APPEND_FORWARD"
    hcm["set_current_client_cert_details"] = {"subject": True, "uri": True, "dns": True}
    optional = json.loads(json.dumps(ingress))
    ingress["filter_chains"][0]["transport_socket"] = tls_socket(pki, True)
    optional["name"] = "ingress_optional"
    optional["filter_chains"][0]["transport_socket"] = tls_socket(pki, False)
    static["listeners"].insert(1, optional)
    return static


@pytest.fixture(scope="module")
def gateway(make_module_mock, start_module_envoy, pki):
    oa = make_module_mock("openai", "oa")
    cfg = gateway_config(oa.url)
    clusters = clusters_for(oa)
    envoy = start_module_envoy(cfg, clusters, bootstrap_overrides={
        "static_resources": mesh_static_resources(cfg, clusters, pki)})
    ports = envoy.listener_ports()
    return envoy, oa, ports["ingress"], ports["ingress_optional"]


def tls_request(port: int, pki: Pki, cert: str | None, method: str, path: str, body=None,
                headers: dict | None = None) -> client.Response:
    ctx = ssl.create_default_context(cafile=pki.path("mesh-ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(pki.path(f"{cert}.pem"), pki.path(f"{cert}.key"))
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("content-type", "application/json")
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        out: dict = {}
        for k, v in resp.getheaders():
            out[k.lower()] = f"{out[k.lower()]}, {v}" if k.lower() in out else v
        return client.Response(resp.status, out, resp.read())
    finally:
        conn.close()


def call(port, pki, cert, model, **headers) -> client.Response:
    return tls_request(port, pki, cert, "POST", CHAT, chat(model), headers)


# (certificate, model) → the group that serves it, or the refusal the access checks give.
ALLOWED = [("research", "gpt-4o"), ("finance", "gpt-4o-mini")]
DENIED = [("research", "gpt-4o-mini"), ("research", "o3"), ("finance", "gpt-4o")]


@pytest.mark.parametrize("cert,model", ALLOWED, ids=[f"{c}-{m}" for c, m in ALLOWED])
def test_a_workload_certificate_gets_its_keys_policy_without_a_key(gateway, pki, cert, model):
    envoy, oa, mtls, _ = gateway
    resp = call(mtls, pki, cert, model)
    assert resp.status == 200, resp
    assert resp.headers["x-llm-router-model-group"] == model
    rec = expect_upstream(oa.last(), path=CHAT, host=oa.authority, headers={"authorization": f"Bearer {PROVIDER}"},
                          absent=("x-forwarded-client-cert",))
    assert "spiffe://" not in str(rec.headers), "a mesh identity reached the provider"



@pytest.mark.parametrize("cert,model", DENIED, ids=[f"{c}-{m}" for c, m in DENIED])
def test_a_workload_asking_for_another_namespace_s_model_is_refused(gateway, pki, cert, model):
    envoy, oa, mtls, _ = gateway
    before = oa.count
    err = expect_error(call(mtls, pki, cert, model), 401, "key_model_access_denied", param="model")
    assert err["message"].endswith(f"Tried to access {model}")
    assert oa.count == before, "a refused request reached the provider"


def test_the_model_list_is_the_workload_s_own(gateway, pki):
    _, _, mtls, _ = gateway
    resp = tls_request(mtls, pki, "research", "GET", "/v1/models")
    assert resp.status == 200, resp
    assert [m["id"] for m in resp.json()["data"]] == ["gpt-4o"]


@pytest.mark.parametrize("listener,cert", [("mtls", "other"), ("mtls", "dns-only"), ("optional", None)],
                         ids=["unknown-san", "dns-san-only", "no-certificate"])
def test_an_unbound_or_missing_identity_is_refused(gateway, pki, listener, cert):
    _, oa, mtls, optional = gateway
    before = oa.count
    port = mtls if listener == "mtls" else optional
    expect_error(call(port, pki, cert, "gpt-4o"), 401, "invalid_api_key")
    expect_error(tls_request(port, pki, cert, "GET", "/v1/models"), 401, "invalid_api_key")
    assert oa.count == before


@pytest.mark.parametrize("listener", ["mtls", "optional"])
def test_a_certificate_from_another_ca_never_gets_past_the_handshake(gateway, pki, listener):
    _, oa, mtls, optional = gateway
    before = oa.count
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        call(mtls if listener == "mtls" else optional, pki, "forged", "gpt-4o")
    assert oa.count == before


def test_a_bearer_key_still_works_over_tls_and_is_authoritative(gateway, pki):
    envoy, oa, mtls, optional = gateway
    # The support key's policy (o3 only), not the certificate's (gpt-4o only).
    assert call(mtls, pki, "research", "o3", authorization=f"Bearer {SUPPORT}").status == 200
    expect_error(call(mtls, pki, "research", "gpt-4o", authorization=f"Bearer {SUPPORT}"), 401,
                 "key_model_access_denied")
    # A wrong key is refused even from a bound workload.
    expect_error(call(mtls, pki, "research", "gpt-4o", authorization="Bearer sk-guessed-0000"), 401,
                 "invalid_api_key")
    # Without a certificate: the finance key (a key with bindings keeps its token), the master key.
    assert call(optional, pki, None, "gpt-4o-mini", **{"x-api-key": FINANCE}).status == 200
    assert call(optional, pki, None, "o3", authorization=f"Bearer {MASTER}").status == 200
    expect_upstream(oa.last(), path=CHAT, host=oa.authority, headers={"authorization": f"Bearer {PROVIDER}"})
    expect_no_secrets(str(oa.last().headers), (MASTER, SUPPORT, FINANCE), "the provider's request headers")


@pytest.mark.parametrize("cert", [None, "other"], ids=["no-certificate", "unknown-san"])
def test_identity_looking_headers_select_no_policy(gateway, pki, cert):
    _, oa, mtls, optional = gateway
    before = oa.count
    spoofed = {
        "x-forwarded-client-cert": f"By={OTHER_ID};Hash=00;URI={RESEARCH_ID}",
        "x-jwt-sub": "finance-batch",
        "x-forwarded-for": "10.0.0.1",
        "connection.uri_san_peer_certificate": RESEARCH_ID,
    }
    expect_error(call(optional if cert is None else mtls, pki, cert, "gpt-4o", **spoofed), 401, "invalid_api_key")
    assert oa.count == before


def test_a_verified_jwt_selects_its_key(gateway, pki):
    _, oa, _, optional = gateway
    token = pki.token("finance-batch")
    resp = call(optional, pki, None, "gpt-4o-mini", **{JWT_HEADER: token})
    assert resp.status == 200, resp
    rec = expect_upstream(oa.last(), path=CHAT, host=oa.authority, headers={"authorization": f"Bearer {PROVIDER}"})
    assert token not in str(rec.headers), "the JWT reached the provider"
    expect_error(call(optional, pki, None, "gpt-4o", **{JWT_HEADER: token}), 401,
                 "key_model_access_denied")


def test_jwt_refusals(gateway, pki):
    _, oa, mtls, optional = gateway
    before = oa.count
    # A valid token whose subject no key is bound to: as a missing key.
    expect_error(call(optional, pki, None, "gpt-4o-mini", **{JWT_HEADER: pki.token('someone-else')}),
                 401, "invalid_api_key")
    # A certificate and a token naming two different keys: neither is chosen.
    expect_error(call(mtls, pki, "research", "gpt-4o", **{JWT_HEADER: pki.token('finance-batch')}),
                 401, "invalid_api_key")
    # Expired, or signed for another issuer: Envoy's jwt_authn refuses before the router (plain-text 401).
    for bad in (pki.token("finance-batch", exp_in=-600), pki.token("finance-batch", iss="https://evil.test")):
        resp = call(optional, pki, None, "gpt-4o-mini", **{JWT_HEADER: bad})
        assert resp.status == 401, resp
    assert oa.count == before


def test_the_log_names_no_certificate_contents(gateway, pki):
    envoy, _, mtls, _ = gateway
    call(mtls, pki, "research", "gpt-4o-mini")
    log = envoy.log_text()
    for pem in ("research.pem", "finance.pem"):
        body = Path(pki.path(pem)).read_text().splitlines()[1]
        assert body not in log, "certificate contents in Envoy's log"
    assert "llm-router: key `research-app` refused: key_model_access_denied" in log
