"""The official OpenAI Python SDK against the gateway, as an app team would use it: `base_url` at Envoy, the
gateway's master key as `api_key`. The router must look like OpenAI to the SDK — responses parse, streams
iterate, errors become the SDK's typed exceptions with the router's error codes — while the provider sees
its own key and model id."""

from __future__ import annotations

import openai
import pytest

from .support.envoy import clusters_for
from .support.plugin import deployment, plugin_config

GATEWAY_KEY = "sk-gateway-0001"
PROVIDER_KEY = "sk-provider-0002"
AZURE_KEY = "azure-key-0003"


@pytest.fixture(scope="module")
def gateway(make_module_mock, start_module_envoy):
    oa, az = make_module_mock("openai", "oa"), make_module_mock("azure", "az")
    cfg = plugin_config(
        [deployment("gpt-4o", "openai/gpt-4o-2024-08-06", oa.url + "/v1", api_key=PROVIDER_KEY, id="oa"),
         deployment("embed", "azure/text-embedding-3-small-prod", az.url, api_key=AZURE_KEY, id="az",
                    api_version="2024-10-21", model_info={"mode": "embedding"})],
        aliases={"gpt4": "gpt-4o"}, master_key=GATEWAY_KEY)
    envoy = start_module_envoy(cfg, clusters_for(oa, az))
    sdk = openai.OpenAI(base_url=envoy.base_url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=10)
    yield sdk, oa, az
    sdk.close()


def test_a_chat_completion_parses_and_the_provider_sees_its_own_key_and_model(gateway):
    sdk, oa, _ = gateway
    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt4", messages=[{"role": "user", "content": "Hello!"}])
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the openai mock (oa)."
    assert completion.model == "gpt-4o-2024-08-06"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-llm-router-deployment"] == "oa"
    assert raw.headers["x-llm-router-model-group"] == "gpt-4o"
    received = oa.last()
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert received.json["model"] == "gpt-4o-2024-08-06"
    assert GATEWAY_KEY not in str(received.headers)


def test_a_stream_iterates_chunk_by_chunk_with_usage(gateway):
    sdk, _, _ = gateway
    stream = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}],
                                         stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the openai mock (oa)."
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2, "streamed in pieces"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_embeddings_through_azure(gateway):
    sdk, _, az = gateway
    result = sdk.embeddings.create(model="embed", input=["one", "two"])
    assert [d.index for d in result.data] == [0, 1] and len(result.data[0].embedding) == 8
    received = az.last()
    assert received.path == "/openai/deployments/text-embedding-3-small-prod/embeddings?api-version=2024-10-21"
    assert received.headers["api-key"] == AZURE_KEY


def test_the_model_list_is_the_sdk_s_model_list(gateway):
    sdk, _, _ = gateway
    ids = [m.id for m in sdk.models.list()]
    assert ids == ["gpt-4o", "embed", "gpt4"]


def test_router_errors_are_the_sdk_s_typed_exceptions(gateway):
    sdk, _, _ = gateway
    with pytest.raises(openai.NotFoundError) as e:
        sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404 and e.value.code == "model_not_found"
    assert "nope" in e.value.message
    wrong = sdk.with_options(api_key="sk-wrong")
    with pytest.raises(openai.AuthenticationError) as e:
        wrong.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    assert GATEWAY_KEY not in str(e.value.body)
