"""Background health probes (`background_health_checks`): one VM per Envoy process probes each deployment every
`health_check_interval` with a one-token request; failures cool deployments like live traffic does."""

from __future__ import annotations

import re
import time

from .support import client
from .support import envoy as envoy_support
from .support.checks import expect_routed, expect_upstream
from .support.envoy import clusters_for, free_port
from .support.plugin import chat, deployment, plugin_config

PING_CHAT = [{"role": "user", "content": "ping"}]


def is_probe(rec) -> bool:
    """A probe as the mock sees it: max_tokens 1 with a "ping" message or prompt, or an embedding of "ping"."""
    body = rec.json if isinstance(rec.json, dict) else {}
    if body.get("max_tokens") == 1:
        return body.get("messages") == PING_CHAT or body.get("prompt") == "ping"
    return body.get("input") == "ping" and set(body) == {"model", "input"}


def probes(mock) -> list:
    return [r for r in mock.requests if is_probe(r)]


def wait_for_probes(mock, n: int, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probes(mock)
        if len(got) >= n:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{mock.name} received {len(probes(mock))} probe(s) within {timeout}s, expected {n}; "
                         f"requests: {mock.requests}")


def wait_for_log(envoy, pattern: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = envoy.log_text()
        if re.search(pattern, log):
            return log
        assert time.monotonic() < deadline, f"{pattern!r} not logged; log tail:\n{envoy.log_tail()}"
        time.sleep(0.05)


def probe_config(model_list: list, *, enabled=True, interval=1, **router_settings) -> dict:
    cfg = plugin_config(model_list, **router_settings)
    cfg["general_settings"].update({"background_health_checks": enabled, "health_check_interval": interval})
    return cfg


def test_one_vm_per_process_probes_each_deployment_once_per_interval(start_envoy, make_mock):
    a, b = make_mock("openai", "a"), make_mock("openai", "b")
    cfg = probe_config([deployment("pair", f"openai/model-{m.name}", m.url + "/v1", api_key=f"key-{m.name}", id=m.name)
                        for m in (a, b)])
    envoy = start_envoy(cfg, clusters_for(a, b), concurrency=2)
    for m in (a, b):
        first = wait_for_probes(m, 1)[0]
        expect_upstream(first, path="/v1/chat/completions", host=m.authority, model=f"model-{m.name}",
                        headers={"authorization": f"Bearer key-{m.name}", "content-type": "application/json"})
        assert first.json == {"model": f"model-{m.name}", "messages": PING_CHAT, "max_tokens": 1}, first.json
    a.clear()
    b.clear()
    # A counting window: with one prober each mock gets ~4 probes in 4 s (at most 5 at the window's edges, fewer
    # if a loaded machine delays ticks); every additional prober (Envoy runs 3 router VMs here: 2 workers + the
    # main thread) would add ~4 more, so 7 or more.
    time.sleep(4.0)
    counts = (len(probes(a)), len(probes(b)))
    assert all(2 <= n <= 5 for n in counts), counts
    assert a.count + b.count == sum(counts), "only probes were sent"
    # Envoy 1.40 --concurrency 2 runs three long-lived router root contexts (main thread + 2 workers), each
    # configured and ticking; exactly one took the lease and kept it.
    log = envoy.log_text()
    holders = re.findall(r"health probes every 1 s for 2 deployment\(s\) \(holder id ([0-9a-f]{16}),", log)
    assert len(holders) >= 3, log
    took = re.findall(r"health probes: holder ([0-9a-f]{16}) took the lease", log)
    assert len(took) == 1 and took[0] in holders, took
    assert "lost the lease" not in log


def upstream_role_in_its_own_vm(monkeypatch) -> None:
    """Failover wiring whose upstream filter has its own vm_id (the wiring background probes need)."""
    original = envoy_support.upstream_wasm_filter

    def own_vm(*args, **kwargs):
        f = original(*args, **kwargs)
        f["typed_config"]["config"]["vm_config"]["vm_id"] = "llm_router_upstream"
        return f

    monkeypatch.setattr(envoy_support, "upstream_wasm_filter", own_vm)


def test_a_failing_probe_cools_the_deployment_for_live_traffic(start_envoy, make_mock, monkeypatch):
    a, b = make_mock("openai", "a"), make_mock("openai", "b")
    a.respond(status=500, body={"error": {"message": "down", "type": "server_error"}})
    cfg = probe_config([deployment("pair", f"openai/model-{m.name}", m.url + "/v1", api_key="k", id=m.name)
                        for m in (a, b)], allowed_fails=0, cooldown_time=60)
    # With the failover wiring, b's cluster runs the upstream role (a's is the plain passthrough cluster).
    upstream_role_in_its_own_vm(monkeypatch)
    envoy = start_envoy(cfg, clusters_for(a, b), concurrency=2, failover=True)
    # The next probe of a is sent only once the previous answer was recorded.
    wait_for_probes(a, 2)
    wait_for_probes(b, 1)
    served = [client.post_json(envoy.base_url, "/v1/chat/completions", chat("pair")) for _ in range(20)]
    assert all(r.status == 200 and r.headers.get("x-llm-router-deployment") == "b" for r in served), \
        [(r.status, r.headers.get("x-llm-router-deployment")) for r in served]
    assert a.count == len(probes(a)), "live traffic must avoid the cooled deployment"
    # The last result, as written to llm_router.v1.probe.<id>: "<finished_ms> <http_status> <result>".
    log = wait_for_log(envoy, r"health probe of deployment b: \d{13} 200 ok\n")
    assert re.search(r"health probe of deployment a failed: \d{13} 500 server_error\n", log)


def test_probes_stay_off_when_the_upstream_role_shares_the_vm(start_envoy, make_mock):
    """Measured: a callout to a cluster whose upstream wasm filter runs in the calling VM re-enters that VM
    (proxy-wasm's dispatcher panics: "RefCell already mutably borrowed"). The router detects the shared VM
    and does not probe; routing is unaffected."""
    a, b = make_mock("openai", "a"), make_mock("openai", "b")
    cfg = probe_config([deployment("pair", f"openai/model-{m.name}", m.url + "/v1", api_key="k", id=m.name)
                        for m in (a, b)])
    envoy = start_envoy(cfg, clusters_for(a, b), concurrency=2, failover=True)
    wait_for_log(envoy, r"background health probes are off: the upstream role \(root_id llm_router_upstream\) "
                        r"runs in this VM")
    time.sleep(2.0)  # an absence: two intervals without a probe
    assert not probes(a) and not probes(b), (a.requests, b.requests)
    served = [client.post_json(envoy.base_url, "/v1/chat/completions", chat("pair")) for _ in range(10)]
    assert all(r.status == 200 for r in served), served
    assert "panicked" not in envoy.log_text()


def test_no_probes_unless_enabled(start_envoy, make_mock):
    a = make_mock("openai", "a")
    cfg = probe_config([deployment("solo", "openai/model-a", a.url + "/v1", api_key="k", id="a")], enabled=False)
    envoy = start_envoy(cfg, clusters_for(a), concurrency=2)
    expect_routed(client.post_json(envoy.base_url, "/v1/chat/completions", chat("solo")), "a", "solo")
    time.sleep(3.0)  # an absence: three intervals in which a prober would have sent three probes
    assert a.count == 1 and not probes(a), a.requests
    assert "health probe" not in envoy.log_text()


def test_probe_shapes_per_mode_and_provider(start_envoy, make_mock):
    emb, ant = make_mock("openai", "emb"), make_mock("anthropic", "ant")
    cfg = probe_config([
        deployment("embed", "openai/text-embedding-3-small", emb.url + "/v1", api_key="k-emb", id="e",
                   model_info={"mode": "embedding"}),
        deployment("claude", "anthropic/claude-3-5-haiku", ant.url, api_key="k-ant", id="c"),
        deployment("images", "openai/dall-e-3", emb.url + "/v1", api_key="k-emb", id="img",
                   model_info={"mode": "image_generation"}),
        deployment("any/*", "openai/*", emb.url + "/v1", api_key="k-emb", id="wild",
                   model_info={"health_check_model": "openai/gpt-4o-mini"}),
    ])
    envoy = start_envoy(cfg, clusters_for(emb, ant))
    deadline = time.monotonic() + 10
    while not {"text-embedding-3-small", "gpt-4o-mini"} <= {r.json["model"] for r in probes(emb)}:
        assert time.monotonic() < deadline, emb.requests
        time.sleep(0.05)
    by_model = {r.json["model"]: r for r in probes(emb)}
    e = expect_upstream(by_model["text-embedding-3-small"], path="/v1/embeddings", host=emb.authority,
                        headers={"authorization": "Bearer k-emb"})
    assert e.json == {"model": "text-embedding-3-small", "input": "ping"}
    w = expect_upstream(by_model["gpt-4o-mini"], path="/v1/chat/completions", host=emb.authority)
    assert w.json == {"model": "gpt-4o-mini", "messages": PING_CHAT, "max_tokens": 1}
    c = expect_upstream(wait_for_probes(ant, 1)[0], path="/v1/messages", host=ant.authority,
                        headers={"x-api-key": "k-ant", "anthropic-version": "2023-06-01"}, absent=["authorization"])
    assert c.json == {"model": "claude-3-5-haiku", "max_tokens": 1, "messages": PING_CHAT}
    assert "dall-e-3" not in by_model
    assert "deployment img has mode `image_generation`, which has no cheap probe request" in envoy.log_text()


def test_probes_follow_a_config_reload(start_envoy, make_mock):
    a = make_mock("openai", "a")

    def cfg(key):
        return probe_config([deployment("solo", "openai/model-a", a.url + "/v1", api_key=key, id="a")])

    envoy = start_envoy(cfg("key-1"), clusters_for(a), concurrency=2, dynamic_listener=True)
    wait_for_probes(a, 1)
    envoy.reload_plugin_config(cfg("key-2"))
    deadline = time.monotonic() + 10
    while not any(r.header("authorization") == "Bearer key-2" for r in probes(a)):
        assert time.monotonic() < deadline, [r.header("authorization") for r in probes(a)]
        time.sleep(0.05)
    a.clear()
    time.sleep(3.0)
    keys = [r.header("authorization") for r in probes(a)]
    assert keys and set(keys) == {"Bearer key-2"} and len(keys) <= 4, keys


def test_unreachable_deployments_count_as_connect_failures(start_envoy, make_mock, monkeypatch):
    b = make_mock("openai", "b")
    dead_port = free_port()
    plain = envoy_support._plain_cluster

    def without_endpoints(name, host, port):
        c = plain(name, host, port)
        if name == "empty":
            c["load_assignment"]["endpoints"] = []
        return c

    monkeypatch.setattr(envoy_support, "_plain_cluster", without_endpoints)
    cfg = probe_config([
        deployment("pair", "openai/model-a", f"http://127.0.0.1:{dead_port}/v1", api_key="k", id="refused"),
        deployment("pair", "openai/model-x", b.url + "/v1", api_key="k", id="nocluster", cluster="no-such-cluster"),
        deployment("pair", "openai/model-y", b.url + "/v1", api_key="k", id="noendpoint", cluster="empty"),
        deployment("pair", "openai/model-b", b.url + "/v1", api_key="k", id="b"),
    ], allowed_fails=0, cooldown_time=60)
    clusters = clusters_for(b)
    clusters[f"outbound|{dead_port}||127.0.0.1"] = ("127.0.0.1", dead_port)
    clusters["empty"] = ("127.0.0.1", dead_port)
    envoy = start_envoy(cfg, clusters)
    wait_for_probes(b, 2)
    # Measured: a refused connection answers the callout with Envoy's local 503 ("upstream connect error ...
    # remote connection failure"); an unknown cluster makes dispatch_http_call fail with BadArgument, a cluster
    # without endpoints with InternalFailure.
    log = wait_for_log(envoy, r"health probe of deployment refused failed: \d{13} 503 connect_failure\n")
    for dep, cluster, status in (("nocluster", "no-such-cluster", "BadArgument"), ("noendpoint", "empty", "InternalFailure")):
        assert f"health probe of deployment {dep} not sent (cluster {cluster}): {status}" in log, log
        assert re.search(rf"health probe of deployment {dep} failed: \d{{13}} 0 connect_failure\n", log), log
    served = [client.post_json(envoy.base_url, "/v1/chat/completions", chat("pair")) for _ in range(15)]
    assert all(r.status == 200 and r.headers.get("x-llm-router-deployment") == "b" for r in served), \
        [(r.status, r.headers.get("x-llm-router-deployment")) for r in served]


def test_the_health_report_shows_each_deployment_s_last_probe(start_envoy, make_mock):
    """The probe's last result reaches GET /llm-router/health: `ok` for a healthy deployment; for one whose probe
    fails (500, allowed_fails 0) the class, the HTTP status, and the cooldown it caused."""
    good, bad = make_mock("openai", "good"), make_mock("openai", "bad")
    bad.respond(status=500)
    cfg = probe_config([deployment("pair", f"openai/model-{m.name}", m.url + "/v1", api_key=f"key-{m.name}", id=m.name)
                        for m in (good, bad)], allowed_fails=0, cooldown_time=60)
    envoy = start_envoy(cfg, clusters_for(good, bad))
    deadline = time.monotonic() + 10
    while True:
        report = client.get(envoy.base_url, "/llm-router/health").json()
        by_id = {d["id"]: d for d in report["deployments"]}
        if all(by_id[i]["last_probe"] for i in ("good", "bad")) and by_id["bad"]["state"] == "cooling":
            break
        assert time.monotonic() < deadline, report
        time.sleep(0.1)
    assert by_id["good"]["last_probe"]["result"] == "ok" and by_id["good"]["last_probe"]["status"] == 200, by_id
    assert by_id["good"]["state"] == "healthy", by_id
    assert by_id["bad"]["last_probe"]["result"] == "server_error" and by_id["bad"]["last_probe"]["status"] == 500
    assert by_id["bad"]["last_error_class"] == "server_error" and by_id["bad"]["cooldown_remaining_ms"] > 50_000
    assert report["healthy_count"] == 1 and report["unhealthy_count"] == 1
    assert "key-good" not in str(report) and "key-bad" not in str(report)
