"""Routing: a client speaks OpenAI (or Anthropic) to Envoy; the router picks the deployment of the requested
model and reshapes the request for that provider: path, host, credentials and the body's `model`."""

from __future__ import annotations

import json

import pytest

from .support import client
from .support.checks import expect_error, expect_routed, expect_upstream
from .support.envoy import clusters_for
from .support.plugin import chat, deployment, plugin_config

OPENAI_KEY = "sk-test-openai-0001"
AZURE_KEY = "azure-test-key-0002"
ANTHROPIC_KEY = "sk-ant-test-0003"
GROQ_KEY = "gsk-literal-0004"
ENV = {"OPENAI_API_KEY": OPENAI_KEY, "AZURE_API_KEY": AZURE_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
CLIENT_CREDENTIALS = {"authorization": "Bearer client-key", "api-key": "client-api-key", "x-api-key": "client-x-key"}


class World:
    def __init__(self, envoy, openai, azure, anthropic, groq, passthrough):
        self.envoy, self.openai, self.azure, self.anthropic = envoy, openai, azure, anthropic
        self.groq, self.passthrough = groq, passthrough
        self.mocks = (openai, azure, anthropic, groq, passthrough)

    def post(self, path, body, headers=None):
        return client.post_json(self.envoy.base_url, path, body, headers)

    def only(self, mock):
        """The one request `mock` received, checking that no other mock received anything."""
        for m in self.mocks:
            assert m.count == (1 if m is mock else 0), f"{m.name} received {m.count} request(s): {m.requests}"
        return mock.last()


@pytest.fixture(scope="module")
def world_(make_module_mock, start_module_envoy):
    openai = make_module_mock("openai", "openai")
    azure = make_module_mock("azure", "azure")
    anthropic = make_module_mock("anthropic", "anthropic")
    groq = make_module_mock("openai", "groq")
    passthrough = make_module_mock("openai", "passthrough")
    v1 = openai.url + "/v1"
    model_list = [
        deployment("gpt-4o", "openai/gpt-4o", v1, api_key="os.environ/OPENAI_API_KEY", weight=1, id="openai-east"),
        deployment("azure-gpt-4o", "azure/gpt-4o-prod", azure.url, api_key="os.environ/AZURE_API_KEY",
                   api_version="2024-10-21", id="azure-prod"),
        deployment("deltallm-azure", "azure/gpt-4o-dl", azure.url, api_key="os.environ/AZURE_API_KEY",
                   api_version="2024-06-01", provider="azure_openai", params_key="deltallm_params", id="azure-dl"),
        deployment("claude", "anthropic/claude-3-5-sonnet-latest", anthropic.url,
                   api_key="os.environ/ANTHROPIC_API_KEY", id="anthropic-main"),
        deployment("groq-llama", "groq/llama-3.1-8b", groq.url + "/openai/v1", api_key=GROQ_KEY,
                   auth_header_name="X-API-Key", auth_header_format="Token {api_key}", id="groq-1",
                   model_info={"default_params": {"temperature": 0.2}}),
        deployment("meta-llama", "openai/meta/llama-3.1-70b", v1, api_key="os.environ/OPENAI_API_KEY",
                   id="openai-meta"),
        deployment("bare-model", "my-local-model", v1, api_key="os.environ/OPENAI_API_KEY", id="bare"),
        deployment("together", "together_ai/mixtral-8x7b", v1, api_key="os.environ/OPENAI_API_KEY", id="together"),
        deployment("hf-style", "meta-llama/Llama-3.1-8B-Instruct", v1, api_key="os.environ/OPENAI_API_KEY",
                   id="hf"),
        deployment("text-embedding-3-small", "openai/text-embedding-3-small", v1,
                   api_key="os.environ/OPENAI_API_KEY", id="emb", model_info={"mode": "embedding"}),
        deployment("openai/*", "openai/*", v1, api_key="os.environ/OPENAI_API_KEY", id="openai-wild"),
        deployment("claude-*", "anthropic/claude-*", anthropic.url, api_key="os.environ/ANTHROPIC_API_KEY",
                   id="claude-wild"),
        deployment("*", "openai/*", groq.url + "/openai/v1", api_key=GROQ_KEY, id="catch-all"),
    ]
    cfg = plugin_config(model_list, aliases={"gpt4": "gpt-4o"})
    envoy = start_module_envoy(cfg, clusters_for(openai, azure, anthropic, groq, passthrough=passthrough),
                               env=ENV, label="routing")
    return World(envoy, openai, azure, anthropic, groq, passthrough)


@pytest.fixture
def world(world_):
    for m in world_.mocks:
        m.reset()
    return world_


# ---- OpenAI-compatible providers -----------------------------------------------------------------------

def test_chat_completion_goes_to_the_openai_deployment_with_the_provider_key(world):
    r = world.post("/v1/chat/completions", chat("gpt-4o"))
    expect_routed(r, "openai-east", "gpt-4o")
    assert r.headers["x-mock-name"] == "openai" and r.json()["object"] == "chat.completion"
    expect_upstream(world.only(world.openai), path="/v1/chat/completions", host=world.openai.authority,
                    model="gpt-4o", headers={"authorization": f"Bearer {OPENAI_KEY}"},
                    absent=("api-key", "x-api-key"))


def test_the_body_is_forwarded_byte_for_byte_except_the_model(world):
    raw = (b'{"messages": [{"role": "user", "content": "h\\u00e9llo \\"quoted\\" caf\xc3\xa9"}],'
           b'   "model" :  "gpt4" , "temperature": 0.5,"n":1, "tools": [], "metadata": {"model": "keep-me"}}')
    r = world.post("/v1/chat/completions", raw, headers={"content-type": "application/json"})
    expect_routed(r, "openai-east", "gpt-4o")
    rec = expect_upstream(world.only(world.openai), path="/v1/chat/completions", host=world.openai.authority,
                          model="gpt-4o")
    assert rec.body == raw.replace(b'"model" :  "gpt4"', b'"model" :  "gpt-4o"')


def test_an_alias_resolves_to_its_model_group(world):
    r = world.post("/v1/chat/completions", chat("gpt4"))
    expect_routed(r, "openai-east", "gpt-4o")
    expect_upstream(world.only(world.openai), path="/v1/chat/completions", host=world.openai.authority,
                    model="gpt-4o")


def test_client_credentials_never_reach_the_provider(world):
    r = world.post("/v1/chat/completions", chat("gpt-4o"), headers=CLIENT_CREDENTIALS)
    expect_routed(r, "openai-east")
    expect_upstream(world.only(world.openai), path="/v1/chat/completions", host=world.openai.authority,
                    headers={"authorization": f"Bearer {OPENAI_KEY}"}, absent=("api-key", "x-api-key"))


def test_a_client_sent_cluster_header_does_not_choose_the_upstream(world):
    r = world.post("/v1/chat/completions", chat("gpt-4o"),
                   headers={"x-llm-router-cluster": world.passthrough.cluster_name})
    expect_routed(r, "openai-east")
    expect_upstream(world.only(world.openai), path="/v1/chat/completions", host=world.openai.authority)


@pytest.mark.parametrize("client_path, upstream_path, body", [
    ("/v1/completions", "/v1/completions", {"model": "gpt-4o", "prompt": "Say hi"}),
    ("/v1/responses", "/v1/responses", {"model": "gpt-4o", "input": "Say hi"}),
    ("/chat/completions", "/v1/chat/completions", chat("gpt-4o")),
    ("/completions", "/v1/completions", {"model": "gpt-4o", "prompt": "Say hi"}),
    ("/responses", "/v1/responses", {"model": "gpt-4o", "input": "Say hi"}),
    ("/v1/chat/completions?trace=1&x=y", "/v1/chat/completions?trace=1&x=y", chat("gpt-4o")),
])
def test_every_openai_endpoint_with_or_without_v1_and_the_query_string(world, client_path, upstream_path, body):
    r = world.post(client_path, body)
    expect_routed(r, "openai-east", "gpt-4o")
    expect_upstream(world.only(world.openai), path=upstream_path, host=world.openai.authority, model="gpt-4o",
                    headers={"authorization": f"Bearer {OPENAI_KEY}"})


@pytest.mark.parametrize("client_path", ["/v1/embeddings", "/embeddings"])
def test_embeddings(world, client_path):
    r = world.post(client_path, {"model": "text-embedding-3-small", "input": ["a", "b"]})
    expect_routed(r, "emb", "text-embedding-3-small")
    assert [d["index"] for d in r.json()["data"]] == [0, 1]
    expect_upstream(world.only(world.openai), path="/v1/embeddings", host=world.openai.authority,
                    model="text-embedding-3-small")


def test_an_api_base_path_prefix_and_a_custom_auth_header(world):
    r = world.post("/v1/chat/completions", chat("groq-llama"), headers=CLIENT_CREDENTIALS)
    expect_routed(r, "groq-1", "groq-llama")
    rec = expect_upstream(world.only(world.groq), path="/openai/v1/chat/completions", host=world.groq.authority,
                          model="llama-3.1-8b", headers={"x-api-key": f"Token {GROQ_KEY}"},
                          absent=("authorization", "api-key"))
    assert rec.json["temperature"] == 0.2, "model_info.default_params fills what the request leaves out"
    assert rec.json["messages"] == chat("groq-llama")["messages"]


def test_default_params_never_override_the_request(world):
    world.post("/v1/chat/completions", chat("groq-llama", temperature=0.9))
    rec = world.only(world.groq)
    assert rec.json["temperature"] == 0.9 and rec.json["model"] == "llama-3.1-8b"


@pytest.mark.parametrize("group, deployment_id, upstream_model", [
    ("meta-llama", "openai-meta", "meta/llama-3.1-70b"),  # only the first "/" splits the provider off
    ("bare-model", "bare", "my-local-model"),  # no provider prefix: OpenAI-compatible
    ("together", "together", "mixtral-8x7b"),  # another OpenAI-compatible provider
    # A prefix that names no known provider is part of the model id (Hugging Face style, e.g. for vLLM):
    # OpenAI-compatible, model forwarded whole.
    ("hf-style", "hf", "meta-llama/Llama-3.1-8B-Instruct"),
])
def test_provider_prefixes(world, group, deployment_id, upstream_model):
    r = world.post("/v1/chat/completions", chat(group))
    expect_routed(r, deployment_id, group)
    expect_upstream(world.only(world.openai), path="/v1/chat/completions", host=world.openai.authority,
                    model=upstream_model, headers={"authorization": f"Bearer {OPENAI_KEY}"})


# ---- Azure OpenAI ------------------------------------------------------------------------------------

@pytest.mark.parametrize("client_path, endpoint, body", [
    ("/v1/chat/completions", "chat/completions", chat("azure-gpt-4o")),
    ("/v1/completions", "completions", {"model": "azure-gpt-4o", "prompt": "hi"}),
    ("/v1/embeddings", "embeddings", {"model": "azure-gpt-4o", "input": "hi"}),
])
def test_azure_gets_its_deployment_path_api_version_and_api_key(world, client_path, endpoint, body):
    r = world.post(client_path, body, headers=CLIENT_CREDENTIALS)
    expect_routed(r, "azure-prod", "azure-gpt-4o")
    assert r.json()["model"] == "gpt-4o-prod"
    expect_upstream(world.only(world.azure),
                    path=f"/openai/deployments/gpt-4o-prod/{endpoint}?api-version=2024-10-21",
                    host=world.azure.authority, model="gpt-4o-prod", headers={"api-key": AZURE_KEY},
                    absent=("authorization", "x-api-key"))


def test_deltallm_params_with_provider_azure_openai(world):
    r = world.post("/v1/chat/completions", chat("deltallm-azure"))
    expect_routed(r, "azure-dl", "deltallm-azure")
    expect_upstream(world.only(world.azure),
                    path="/openai/deployments/gpt-4o-dl/chat/completions?api-version=2024-06-01",
                    host=world.azure.authority, model="gpt-4o-dl", headers={"api-key": AZURE_KEY},
                    absent=("authorization",))


# ---- Anthropic -----------------------------------------------------------------------------------------

def test_anthropic_messages_api(world):
    body = {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]}
    r = world.post("/v1/messages", body, headers=CLIENT_CREDENTIALS)
    expect_routed(r, "anthropic-main", "claude")
    assert r.json()["type"] == "message" and r.json()["model"] == "claude-3-5-sonnet-latest"
    expect_upstream(world.only(world.anthropic), path="/v1/messages", host=world.anthropic.authority,
                    model="claude-3-5-sonnet-latest",
                    headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
                    absent=("authorization", "api-key"))


def test_anthropic_through_the_openai_chat_api_is_not_translated(world):
    r = world.post("/v1/chat/completions", chat("claude"))
    expect_routed(r, "anthropic-main", "claude")
    assert r.json()["object"] == "chat.completion"
    rec = expect_upstream(world.only(world.anthropic), path="/v1/chat/completions", host=world.anthropic.authority,
                          model="claude-3-5-sonnet-latest",
                          headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
                          absent=("authorization",))
    assert rec.json["messages"] == chat("claude")["messages"]


def test_a_client_anthropic_version_is_kept(world):
    body = {"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
    world.post("/v1/messages", body, headers={"anthropic-version": "2023-01-01"})
    assert world.only(world.anthropic).headers["anthropic-version"] == "2023-01-01"


def test_messages_api_for_a_non_anthropic_model_is_refused(world):
    r = world.post("/v1/messages", {"model": "gpt-4o", "max_tokens": 8, "messages": []})
    expect_error(r, 400, "unsupported_endpoint")
    assert all(m.count == 0 for m in world.mocks)


# ---- wildcards -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("requested, deployment_id, mock, path, upstream_model", [
    ("openai/gpt-4.1", "openai-wild", "openai", "/v1/chat/completions", "gpt-4.1"),
    ("claude-3-opus", "claude-wild", "anthropic", "/v1/chat/completions", "claude-3-opus"),
    ("mistral-large", "catch-all", "groq", "/openai/v1/chat/completions", "mistral-large"),
])
def test_wildcard_model_names_most_specific_first(world, requested, deployment_id, mock, path, upstream_model):
    r = world.post("/v1/chat/completions", chat(requested))
    expect_routed(r, deployment_id)
    target = getattr(world, mock)
    expect_upstream(world.only(target), path=path, host=target.authority, model=upstream_model)


@pytest.mark.parametrize("requested, deployment_id", [("gpt-4o", "openai-east"), ("claude", "anthropic-main"),
                                                      ("gpt4", "openai-east")])
def test_exact_names_and_aliases_win_over_wildcards(world, requested, deployment_id):
    expect_routed(world.post("/v1/chat/completions", chat(requested)), deployment_id)


# ---- what the router leaves alone -----------------------------------------------------------------------

def test_other_paths_pass_through_untouched(world):
    headers = {"authorization": "Bearer client-key", "x-custom": "1", "content-type": "text/plain"}
    r = client.request("POST", world.envoy.base_url, "/v1/files?purpose=batch", b"not json {", headers)
    assert r.status == 200 and r.headers["x-mock-name"] == "passthrough"
    assert "x-llm-router-deployment" not in r.headers
    rec = world.only(world.passthrough)
    assert (rec.method, rec.path, rec.body) == ("POST", "/v1/files?purpose=batch", b"not json {")
    for k, v in headers.items():
        assert rec.headers[k] == v
    assert "x-llm-router-cluster" not in rec.headers

    r = client.get(world.envoy.base_url, "/health/liveliness", headers={"x-api-key": "client-x-key"})
    assert r.status == 200 and r.json()["path"] == "/health/liveliness"
    assert world.passthrough.last().headers["x-api-key"] == "client-x-key"


def test_a_client_cannot_pick_a_cluster_on_a_path_the_router_does_not_route(world):
    # The first route matches on the router's cluster header; Envoy strips a client-sent one before routing.
    r = client.get(world.envoy.base_url, "/v1/files", headers={"x-llm-router-cluster": world.openai.cluster_name})
    assert r.status == 200 and r.headers["x-mock-name"] == "passthrough"
    assert world.only(world.passthrough).path == "/v1/files"


def test_upstream_errors_reach_the_client_as_they_are(world):
    world.openai.respond(status=400, body={"error": {"message": "bad tools", "type": "invalid_request_error",
                                                     "param": "tools", "code": None}}, times=1)
    r = world.post("/v1/chat/completions", chat("gpt-4o"))
    expect_routed(r, "openai-east", "gpt-4o", status=400)
    assert r.json()["error"]["message"] == "bad tools" and r.headers["x-mock-name"] == "openai"
    assert world.openai.count == 1


def test_the_upstream_response_body_is_not_modified(world):
    payload = {"id": "chatcmpl-x", "object": "chat.completion", "model": "whatever-upstream-says",
               "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    world.openai.respond(body=payload, times=1)
    r = world.post("/v1/chat/completions", chat("gpt-4o"))
    assert r.body == json.dumps(payload).encode()
