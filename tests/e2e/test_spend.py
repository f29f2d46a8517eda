"""Spend attribution against real Envoy: two virtual keys in two teams (with `user_id` and `tags`) and the master
key call priced deployments on the mock provider, JSON and streamed. Then three views of the same spend must agree
to the nano-USD:

* the JSON access log (envoy/access-log-json.yaml, loaded here as shipped) carries, per request, the key's alias
  (never the key or its hash), team, user, tags, model group, tokens and `cost_usd` as an exact decimal;
* Prometheus `llm_router_spend_*` per team / key alias / model group equal the sums of those lines;
* `llm-router spend` over the written log prints the same totals.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import time
import uuid
from decimal import Decimal
from pathlib import Path

import yaml

from .support import client
from .support.envoy import REPO, bootstrap, clusters_for, free_port
from .support.plugin import chat, deployment, plugin_config
from .support.prometheus import scrape

MASTER = "sk-master-5pend"
FINANCE = "sk-finance-5pend"
SUPPORT = "sk-support-5pend"
PROVIDER = "sk-provider-5pend"
CHAT = "/v1/chat/completions"
# USD per token: (input, output).
PRICES = {"gpt-4o": (2.5e-6, 1e-5), "mini": (1.5e-7, 6e-7)}
SNIPPET = REPO / "envoy" / "access-log-json.yaml"


def sha256_hex(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def nanos(prompt: int, completion: int, group: str) -> int:
    """The router's price (limits::cost, limits::usd_to_nanos): one f64 sum, rounded up to the nano-USD unless
    within 1e-6 of an integer."""
    pin, pout = PRICES[group]
    x = (prompt * pin + completion * pout) * 1e9
    r = math.floor(x + 0.5)
    return max(0, int(r if abs(x - r) < 1e-6 else math.ceil(x)))


def usd(n: int) -> str:
    whole, frac = divmod(n, 10**9)
    return str(whole) if frac == 0 else f"{whole}.{frac:09d}".rstrip("0")


def gateway_config(base: str) -> dict:
    models = [deployment(g, f"openai/{g}", base, api_key=PROVIDER, id=f"{g}-dep",
                         model_info={"input_cost_per_token": pin, "output_cost_per_token": pout})
              for g, (pin, pout) in PRICES.items()]
    cfg = plugin_config(models, master_key=MASTER,
                        envoy_settings={"access_log_properties": True, "access_log_tokens": True})
    cfg["teams"] = [{"team_id": "finance", "team_alias": "Finance"}, {"team_id": "support"}]
    cfg["keys"] = [
        {"token": sha256_hex(FINANCE), "key_alias": "finance-app", "team_id": "finance", "user_id": "alice",
         "tags": ["prod", "reports"], "metadata": {"cost_center": "cc-17"}},
        {"token": sha256_hex(SUPPORT), "key_alias": "support-bot", "team_id": "support", "user_id": "bob",
         "tags": ["prod"]},
    ]
    return cfg


def json_log_envoy(start_envoy, cfg: dict, clusters: dict, log_path: Path):
    """An Envoy whose ingress access log is the shipped JSON format, to `log_path`."""
    shipped = yaml.safe_load(SNIPPET.read_text())["access_log"][0]["typed_config"]["log_format"]
    boot = bootstrap(cfg, clusters, access_log_path=log_path)
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["access_log"][0]["typed_config"]["log_format"] = shipped
    return start_envoy(cfg, clusters, access_log=True,
                       bootstrap_overrides={"static_resources": boot["static_resources"]})


def log_lines(path: Path, n: int, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        lines = [l for l in (path.read_text().splitlines() if path.exists() else []) if l.strip()]
        if len(lines) >= n or time.monotonic() > deadline:
            assert len(lines) == n, f"{len(lines)} access-log lines, expected {n}: {lines}"
            return lines
        time.sleep(0.1)


def stream_usage(body: bytes):
    for line in body.decode().splitlines():
        if line.startswith("data: {"):
            event = json.loads(line[6:])
            if event.get("usage"):
                return event["usage"]["prompt_tokens"], event["usage"]["completion_tokens"]
    return None


def test_spend_agrees_across_the_json_log_the_metrics_and_the_cli(start_envoy, make_mock, tmp_path):
    oa = make_mock("openai", "oa")
    log_path = tmp_path / "access.json.log"
    envoy = json_log_envoy(start_envoy, gateway_config(oa.url + "/v1"), clusters_for(oa), log_path)

    # (key, model, how) → per request id what the router must log.
    plan = [(FINANCE, "gpt-4o", "json"), (FINANCE, "gpt-4o", "json"), (FINANCE, "mini", "stream"),
            (FINANCE, "mini", "json"), (SUPPORT, "mini", "json"), (SUPPORT, "gpt-4o", "stream"),
            (SUPPORT, "mini", "stream-no-usage"), (MASTER, "mini", "json")]
    who = {FINANCE: ("finance-app", "finance", "alice", "prod,reports"),
           SUPPORT: ("support-bot", "support", "bob", "prod"), MASTER: ("master_key", None, None, None)}
    expected = {}
    for i, (key, model, how) in enumerate(plan):
        rid = str(uuid.uuid4())
        headers = {"authorization": f"Bearer {key}", "x-request-id": rid}
        alias, team, user, tags = who[key]
        body_tags = {"metadata": {"tags": ["batch", "prod"]}} if i == 3 else {}  # the client's, after the key's
        if i == 3:
            tags = "prod,reports,batch"
        if how == "json":
            resp = client.post_json(envoy.base_url, CHAT, chat(model, f"spend request {i} " * (i + 1), **body_tags),
                                    headers)
            assert resp.status == 200, resp
            u = resp.json()["usage"]
            usage = (u["prompt_tokens"], u["completion_tokens"])
        else:
            extra = {"stream_options": {"include_usage": True}} if how == "stream" else {}
            s = client.stream_post(envoy.base_url, CHAT, chat(model, f"stream {i}", stream=True, **extra), headers)
            s.read_all()
            assert s.status == 200 and b"[DONE]" in s.body, s.body[:300]
            usage = stream_usage(s.body)
            assert (usage is None) == (how == "stream-no-usage"), usage
        expected[rid] = {"key_alias": alias, "team_id": team, "user_id": user, "tags": tags, "model_group": model,
                         "prompt_tokens": None if usage is None else str(usage[0]),
                         "completion_tokens": None if usage is None else str(usage[1]),
                         "cost_usd": None if usage is None else usd(nanos(usage[0], usage[1], model))}
    # A refused request (unknown key) reaches no provider and has no spend fields.
    bad = client.post_json(envoy.base_url, CHAT, chat("mini"), {"authorization": "Bearer sk-guess"})
    assert bad.status == 401

    # ---- 1. the JSON access log -----------------------------------------------------------------------------
    raw = log_lines(log_path, len(plan) + 1)
    for line in raw:
        for secret in (MASTER, FINANCE, SUPPORT, PROVIDER, sha256_hex(FINANCE), sha256_hex(SUPPORT)):
            assert secret not in line, f"a key or its hash in the access log: {line}"
    lines = {l["request_id"]: l for l in map(json.loads, raw)}
    for rid, want in expected.items():
        got = lines[rid]
        assert {k: got[k] for k in want} == want, (rid, got)
        assert got["status"] == 200 and isinstance(got["duration_ms"], int), got  # Envoy's typed operators
        assert got["deployment"] == f"{want['model_group']}-dep" and got["path"] == CHAT, got
    refused = [l for rid, l in lines.items() if rid not in expected]
    assert len(refused) == 1 and refused[0]["status"] == 401, refused
    assert all(refused[0][k] is None for k in ("key_alias", "team_id", "cost_usd", "model_group")), refused

    # ---- 2. the Prometheus metrics: per team / alias / group, the sums of the lines ------------------------------
    sums: dict = {}
    for want in expected.values():
        labels = (want["team_id"] or "-", want["key_alias"], want["model_group"])
        s = sums.setdefault(labels, {"requests": 0, "nanos": 0, "in": 0, "out": 0})
        s["requests"] += 1
        s["nanos"] += int(Decimal(want["cost_usd"] or "0") * 10**9)
        s["in"] += int(want["prompt_tokens"] or 0)
        s["out"] += int(want["completion_tokens"] or 0)
    m = scrape(envoy)
    for (team, alias, group), s in sums.items():
        labels = dict(team=team, key_alias=alias, model_group=group)
        assert m.count("llm_router_spend_requests_total", **labels) == s["requests"], (labels, m)
        assert m.count("llm_router_spend_nanousd_total", **labels) == s["nanos"], (labels, s, m)
        assert m.count("llm_router_spend_input_tokens_total", **labels) == s["in"], (labels, m)
        assert m.count("llm_router_spend_output_tokens_total", **labels) == s["out"], (labels, m)
    assert len(m.series("llm_router_spend_requests_total")) == len(sums), m.series("llm_router_spend_requests_total")
    total_nanos = sum(s["nanos"] for s in sums.values())
    assert total_nanos > 0 and sum(v for _, v in m.series("llm_router_spend_nanousd_total")) == total_nanos
    for name, labels, _ in m.samples:
        if name.startswith("llm_router_spend"):
            assert set(labels) == {"team", "key_alias", "model_group"}, (name, labels)
            assert not any(sha256_hex(k)[:16] in v or k in v for k in (FINANCE, SUPPORT, MASTER) for v in labels.values())
    assert m.series("llm_router_soft_budget_exceeded_total") == [], "no soft budgets configured"

    # ---- 3. llm-router spend over the written log -----------------------------------------------------------------
    proc = subprocess.run(["cargo", "run", "-q", "-p", "llm-router-cli", "--", "spend", str(log_path),
                           "--by", "team,key,model", "--format", "json"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["skipped_lines"] == 0, proc.stderr
    got = {(g["team"], g["key"], g["model"]): (g["requests"], g["cost_nanousd"], g["prompt_tokens"],
                                              g["completion_tokens"]) for g in report["groups"]}
    assert got == {k: (s["requests"], s["nanos"], s["in"], s["out"]) for k, s in sums.items()}, (got, sums)
    assert report["total"]["cost_usd"] == usd(total_nanos) and report["total"]["requests"] == len(plan), report
    # Tags fan out: both keys tag `prod`, only finance-app `reports`; the master key's requests have none.
    proc = subprocess.run(["cargo", "run", "-q", "-p", "llm-router-cli", "--", "spend", "-", "--by", "tag",
                           "--format", "csv"], input=log_path.read_text(), cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = {r.split(",")[0]: r.split(",") for r in proc.stdout.splitlines()[1:]}
    prod = [w for w in expected.values() if w["tags"] and "prod" in w["tags"].split(",")]
    assert int(rows["prod"][1]) == len(prod) and rows["prod"][4] == usd(
        sum(int(Decimal(w["cost_usd"] or "0") * 10**9) for w in prod)), rows
    assert int(rows["-"][1]) == 1 and int(rows["batch"][1]) == 1, rows


def test_a_soft_budget_counts_by_scope_and_name(start_envoy, make_mock, tmp_path):
    oa = make_mock("openai", "oa")
    cfg = gateway_config(oa.url + "/v1")
    cfg["teams"][0].update({"max_budget": 100, "soft_budget": 0.000001})
    cfg["keys"][0].update({"max_budget": 100, "soft_budget": 0.000001})
    envoy = json_log_envoy(start_envoy, cfg, clusters_for(oa), tmp_path / "access.json.log")
    for i in range(3):
        resp = client.post_json(envoy.base_url, CHAT, chat("gpt-4o", "over the soft budget"),
                                {"authorization": f"Bearer {FINANCE}"})
        assert resp.status == 200, resp
    m = scrape(envoy)
    # The first admission saw no spend; the next two saw it past $0.000001.
    assert m.count("llm_router_soft_budget_exceeded_total", scope="key", scope_name="finance-app") == 2, m
    assert m.count("llm_router_soft_budget_exceeded_total", scope="team", scope_name="finance") == 2, m
    assert len(m.series("llm_router_soft_budget_exceeded_total")) == 2, m.series("llm_router_soft_budget_exceeded_total")


def test_a_failover_pass_is_the_first_pass_s_callers(start_envoy, make_mock, tmp_path):
    """With in-request failover a retried request writes one line per pass; the pass that serves is not
    re-identified (the client's key is gone from the replayed request), yet its spend is the key's: the payer rides
    in the router's signed attempt state."""
    a1, a2 = make_mock("openai", "a1"), make_mock("openai", "a2")
    models = [deployment("gpt-4o", "openai/gpt-4o", m.url + "/v1", api_key=PROVIDER, id=f"gpt4o-{m.name}", weight=w,
                         model_info={"input_cost_per_token": PRICES["gpt-4o"][0],
                                     "output_cost_per_token": PRICES["gpt-4o"][1]})
              for m, w in ((a1, 1), (a2, 0))]  # a2 weighs 0: a1 first, a2 as the retry
    cfg = gateway_config(a1.url + "/v1")
    cfg["model_list"] = models
    cfg["router_settings"].update({"num_retries": 1, "allowed_fails": 100})
    log_path = tmp_path / "access.json.log"
    shipped = yaml.safe_load(SNIPPET.read_text())["access_log"][0]["typed_config"]["log_format"]
    clusters = clusters_for(a1, a2, passthrough=a1)
    boot = bootstrap(cfg, clusters, failover_port=free_port(), access_log_path=log_path)
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["access_log"][0]["typed_config"]["log_format"] = shipped
    envoy = start_envoy(cfg, clusters, failover=True, access_log=True,
                        bootstrap_overrides={"static_resources": boot["static_resources"]})
    a1.respond(status=500, times=1)
    rid = str(uuid.uuid4())
    resp = client.post_json(envoy.base_url, CHAT, chat("gpt-4o"), {"authorization": f"Bearer {FINANCE}", "x-request-id": rid})
    assert (resp.status, resp.headers["x-llm-router-deployment"], resp.headers["x-llm-router-attempts"]) == \
        (200, "gpt4o-a2", "2"), resp
    u = resp.json()["usage"]
    cost = nanos(u["prompt_tokens"], u["completion_tokens"], "gpt-4o")
    lines = [json.loads(l) for l in log_lines(log_path, 2)]
    assert [(l["status"], l["deployment"], l["key_alias"], l["team_id"], l["cost_usd"]) for l in lines] == [
        (307, "gpt4o-a1", "finance-app", "finance", None), (200, "gpt4o-a2", "finance-app", "finance", usd(cost))], lines
    labels = dict(team="finance", key_alias="finance-app", model_group="gpt-4o")
    m = scrape(envoy)
    assert m.count("llm_router_spend_requests_total", **labels) == 2, m  # both passes (as llm_router_requests_total)
    assert m.count("llm_router_spend_nanousd_total", **labels) == cost, m
    proc = subprocess.run(["cargo", "run", "-q", "-p", "llm-router-cli", "--", "spend", str(log_path), "--by", "key",
                           "--format", "csv"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    # One client request: the failed pass (its line ends at the internal redirect) is not counted.
    assert proc.stdout.splitlines()[1:] == [f"finance-app,1,{u['prompt_tokens']},{u['completion_tokens']},{usd(cost)}"]
