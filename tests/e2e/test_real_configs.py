"""Real LiteLLM configs: a model_list mixing providers the router serves with ones it cannot (SageMaker,
Bedrock, ...) loads; the servable deployments route, the unservable groups answer `model_not_servable`."""
from __future__ import annotations

import json

from .support import client
from .support.checks import expect_error, expect_no_secrets, expect_routed
from .support.envoy import clusters_for
from .support.plugin import chat, deployment, plugin_config

ROUTE = "/v1/chat/completions"
GOOD_KEY = "sk-real-good-0123456789"
SM_KEY = "sk-real-sagemaker-0123456789"


def post(envoy, body, path: str = ROUTE):
    return client.post_json(envoy.base_url, path, body, None)


def test_one_unsupported_deployment_is_skipped_and_the_rest_serves(start_envoy, make_mock):
    good, passthrough = make_mock("openai", "good"), make_mock("openai", "passthrough")
    cfg = plugin_config([
        deployment("sm", "sagemaker/jumpstart-llama", api_key=SM_KEY, id="sm", aws_region_name="us-west-2"),
        deployment("gpt-4o", "openai/gpt-4o", good.url + "/v1", api_key=GOOD_KEY, id="good"),
    ])
    envoy = start_envoy(cfg, clusters_for(good, passthrough=passthrough))

    resp = post(envoy, chat("gpt-4o"))
    expect_routed(resp, "good", "gpt-4o")
    assert good.last().headers.get("authorization") == f"Bearer {GOOD_KEY}"

    resp = post(envoy, chat("sm"))
    err = expect_error(resp, 400, "model_not_servable", "invalid_request_error", "model")
    assert "`sm`" in err["message"] and "sagemaker" in err["message"], err
    assert good.count == 1 and passthrough.count == 0, [(r.path, r.body) for r in good.requests + passthrough.requests]

    listed = [m["id"] for m in json.loads(client.get(envoy.base_url, "/v1/models").body)["data"]]
    assert listed == ["gpt-4o"], listed
    log = envoy.log_text()
    assert any("model_list[0].litellm_params.model" in line and "skipped" in line for line in log.splitlines()), \
        envoy.log_tail()
    expect_no_secrets(log, (SM_KEY, GOOD_KEY), "the Envoy log")


def test_ollama_with_a_litellm_style_bare_base_reaches_its_v1_api(start_envoy, make_mock):
    """LiteLLM configs give Ollama as `http://host:11434`; Ollama serves the OpenAI API under `/v1/`."""
    ollama, passthrough = make_mock("openai", "ollama"), make_mock("openai", "passthrough")
    cfg = plugin_config([
        deployment("llama", "ollama_chat/llama3.1", ollama.url, id="ollama-bare"),
        deployment("llama-v1", "ollama/llama3.1", ollama.url + "/v1", id="ollama-v1"),
        deployment("embed", "ollama/nomic-embed-text", ollama.url + "/", id="ollama-embed"),
    ])
    envoy = start_envoy(cfg, clusters_for(ollama, passthrough=passthrough))
    for group, dep in (("llama", "ollama-bare"), ("llama-v1", "ollama-v1")):
        expect_routed(post(envoy, chat(group)), dep, group)
        req = ollama.last()
        assert req.path == "/v1/chat/completions", req.path
        assert json.loads(req.body)["model"] == "llama3.1"
        assert "authorization" not in req.headers, req.headers
    expect_routed(post(envoy, {"model": "embed", "input": "hi"}, "/v1/embeddings"), "ollama-embed", "embed")
    assert ollama.last().path == "/v1/embeddings"
    assert passthrough.count == 0


def test_base_url_and_credential_list_reach_the_provider_with_the_right_key(start_envoy, make_mock):
    """`base_url` is LiteLLM's alias of `api_base`; `credential_list` entries named by `litellm_credential_name`
    give a deployment its key and base (its own values win); an unknown credential name skips that deployment."""
    a, b, passthrough = make_mock("openai", "a"), make_mock("openai", "b"), make_mock("openai", "passthrough")
    cred_key, own_key, b_key = "sk-real-cred-0123456789", "sk-real-own-0123456789", "sk-real-baseurl-0123456789"
    cfg = plugin_config([
        {"model_name": "via-base-url", "litellm_params": {"model": "openai/m1", "base_url": b.url + "/v1", "api_key": b_key},
         "model_info": {"id": "base-url"}},
        {"model_name": "via-cred", "litellm_params": {"model": "openai/m2", "litellm_credential_name": "team-a"},
         "model_info": {"id": "cred"}},
        {"model_name": "cred-own-key", "litellm_params": {"model": "openai/m3", "litellm_credential_name": "team-a",
                                                           "api_key": own_key}, "model_info": {"id": "cred-own"}},
        {"model_name": "cred-typo", "litellm_params": {"model": "openai/m4", "litellm_credential_name": "team-z"},
         "model_info": {"id": "typo"}},
    ])
    cfg["credential_list"] = [{"credential_name": "team-a",
                               "credential_values": {"api_key": "os.environ/TEAM_A_KEY", "api_base": a.url + "/v1"},
                               "credential_info": {"description": "team a"}}]
    envoy = start_envoy(cfg, clusters_for(a, b, passthrough=passthrough), env={"TEAM_A_KEY": cred_key})

    expect_routed(post(envoy, chat("via-base-url")), "base-url", "via-base-url")
    req = b.last()
    assert (req.path, req.headers.get("authorization")) == ("/v1/chat/completions", f"Bearer {b_key}")

    expect_routed(post(envoy, chat("via-cred")), "cred", "via-cred")
    req = a.last()
    assert (req.path, req.headers.get("authorization")) == ("/v1/chat/completions", f"Bearer {cred_key}")
    assert json.loads(req.body)["model"] == "m2"

    expect_routed(post(envoy, chat("cred-own-key")), "cred-own", "cred-own-key")
    assert a.last().headers.get("authorization") == f"Bearer {own_key}"

    err = expect_error(post(envoy, chat("cred-typo")), 400, "model_not_servable")
    assert "team-z" in err["message"], err
    assert (a.count, b.count, passthrough.count) == (2, 1, 0)
    expect_no_secrets(envoy.log_text(), (cred_key, own_key, b_key), "the Envoy log")


def test_deployment_request_params_and_headers_reach_only_their_provider(start_envoy, make_mock):
    """LiteLLM sends a deployment's request parameters (`temperature`, `max_tokens`, `extra_body`, ...) with every
    call, the request's own values winning, and its `extra_headers` / `organization` as headers. On a failover to
    another deployment, the first one's key and headers are gone."""
    a, b, passthrough = make_mock("openai", "a"), make_mock("openai", "b"), make_mock("openai", "passthrough")
    tenant_secret = "tenant-secret-0123456789"
    cfg = plugin_config([
        deployment("g", "openai/m-a", a.url + "/v1", api_key="sk-real-a-0123456789", id="a",
                   temperature=0.1, max_tokens=64, reasoning_effort="low", extra_body={"top_k": 3, "guided_choice": ["x"]},
                   organization="org-a", extra_headers={"X-Tenant": "os.environ/TENANT_SECRET", "X-Shared": "from-a"},
                   region_name="eu-west-1", max_parallel_requests=4),
        deployment("h", "openai/m-b", b.url + "/v1", api_key="sk-real-b-0123456789", id="b",
                   extra_headers={"X-Shared": "from-b"}),
    ], fallbacks=[{"g": ["h"]}])
    cfg["general_settings"]["database_url"] = "os.environ/DATABASE_URL_NOT_SET"
    cfg["router_settings"]["redis_host"] = "os.environ/REDIS_HOST_NOT_SET"
    envoy = start_envoy(cfg, clusters_for(a, b, passthrough=passthrough), env={"TENANT_SECRET": tenant_secret},
                        failover=True)

    resp = post(envoy, chat("g", temperature=0.9))
    expect_routed(resp, "a", "g")
    req = a.last()
    body = json.loads(req.body)
    assert (body["model"], body["temperature"], body["max_tokens"], body["reasoning_effort"]) == ("m-a", 0.9, 64, "low")
    assert (body["top_k"], body["guided_choice"]) == (3, ["x"])
    assert req.headers.get("openai-organization") == "org-a"
    assert req.headers.get("x-tenant") == tenant_secret and req.headers.get("x-shared") == "from-a"

    # A client's own organization header never reaches the provider; the deployment's does.
    resp = client.post_json(envoy.base_url, ROUTE, chat("g"), {"OpenAI-Organization": "org-evil"})
    expect_routed(resp, "a", "g")
    assert a.last().headers.get("openai-organization") == "org-a"

    a.respond(status=500)
    resp = post(envoy, chat("g"))
    expect_routed(resp, "b", "h")
    req = b.last()
    assert req.headers.get("authorization") == "Bearer sk-real-b-0123456789"
    assert req.headers.get("x-shared") == "from-b"
    for gone in ("x-tenant", "openai-organization"):
        assert gone not in req.headers, (gone, req.headers)
    assert json.loads(req.body).get("max_tokens") is None, req.body

    log = envoy.log_text()
    for path in ("litellm_params.region_name", "litellm_params.max_parallel_requests", "general_settings.database_url",
                 "router_settings.redis_host"):
        assert any(path in line and "ignored" in line for line in log.splitlines()), (path, envoy.log_tail())
    expect_no_secrets(log, (tenant_secret, "sk-real-a-0123456789", "sk-real-b-0123456789"), "the Envoy log")
