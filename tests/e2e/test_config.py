"""The plugin configuration: `os.environ/NAME` values come from the wasm VM's environment, and a config that
cannot work is refused when Envoy loads it, with a log line that names the field."""

from __future__ import annotations

import copy
import json

import pytest

from .support import client
from .support.checks import expect_no_secrets, expect_routed, expect_upstream
from .support.envoy import Envoy, clusters_for
from .support.plugin import chat, deployment, plugin_config


# ---- os.environ/ ---------------------------------------------------------------------------------------

def test_api_key_api_base_model_and_nested_values_come_from_the_environment(start_envoy, make_mock):
    openai = make_mock("openai")
    cfg = plugin_config([
        deployment("env-model", "os.environ/MODEL_ID", "os.environ/OPENAI_BASE", api_key="os.environ/OPENAI_API_KEY",
                   id="from-env", model_info={"default_params": {"user": "os.environ/DEFAULT_USER"}}),
    ])
    env = {"MODEL_ID": "openai/gpt-4o-env", "OPENAI_BASE": openai.url + "/v1", "OPENAI_API_KEY": "sk-from-env-42",
           "DEFAULT_USER": "team-a"}
    envoy = start_envoy(cfg, clusters_for(openai), env=env)
    expect_routed(client.post_json(envoy.base_url, "/v1/chat/completions", chat("env-model")), "from-env")
    rec = expect_upstream(openai.last(), path="/v1/chat/completions", host=openai.authority, model="gpt-4o-env",
                          headers={"authorization": "Bearer sk-from-env-42"})
    assert rec.json["user"] == "team-a"


def test_secrets_can_come_from_envoys_own_environment(start_envoy, make_mock):
    openai = make_mock("openai")
    cfg = plugin_config([deployment("gpt-4o", "openai/gpt-4o", openai.url + "/v1",
                                    api_key="os.environ/LLM_ROUTER_TEST_OPENAI_KEY", id="openai-1")],
                        master_key="os.environ/LLM_ROUTER_TEST_MASTER_KEY")
    envoy = start_envoy(cfg, clusters_for(openai),
                        host_env={"LLM_ROUTER_TEST_OPENAI_KEY": "sk-host-env",
                                  "LLM_ROUTER_TEST_MASTER_KEY": "mk-host-env-7777"})
    r = client.post_json(envoy.base_url, "/v1/chat/completions", chat("gpt-4o"),
                         headers={"authorization": "Bearer mk-host-env-7777"})
    expect_routed(r, "openai-1")
    assert openai.last().headers["authorization"] == "Bearer sk-host-env"
    assert client.post_json(envoy.base_url, "/v1/chat/completions", chat("gpt-4o")).status == 401
    expect_no_secrets(envoy.log_text(), ("sk-host-env", "mk-host-env-7777"), "the Envoy log")


def test_a_missing_environment_variable_refuses_the_config(wasm):
    cfg = plugin_config([deployment("gpt-4o", "openai/gpt-4o", "http://127.0.0.1:18001/v1",
                                    api_key="os.environ/LLM_ROUTER_TEST_UNSET_KEY")])
    exited, log = Envoy.expect_refused(cfg, env={"SOME_OTHER": "sk-do-not-print-me"})
    assert exited
    lines = [line for line in log.splitlines() if "LLM_ROUTER_TEST_UNSET_KEY" in line]
    assert lines, f"no log line names the missing variable:\n{log[-3000:]}"
    assert any("model_list[0]" in line for line in lines), lines
    expect_no_secrets(log, ("sk-do-not-print-me",), "the Envoy log")


# ---- invalid configs ------------------------------------------------------------------------------------------

def valid_config() -> dict:
    return plugin_config([
        deployment("gpt-4o", "openai/gpt-4o", "http://127.0.0.1:18001/v1", api_key="k", id="one"),
        deployment("groq", "groq/llama-3.1-8b", "http://127.0.0.1:18004/openai/v1", api_key="k",
                   auth_header_name="X-API-Key", auth_header_format="Token {api_key}", id="two"),
    ])


def _set(path: list, value):
    def mutate(cfg: dict) -> dict:
        node = cfg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return cfg
    return mutate


@pytest.mark.parametrize("mutate, field", [
    (_set(["model_list", 1, "litellm_params", "auth_header_format"], "Token"),
     "model_list[1].litellm_params.auth_header_format"),
    (_set(["model_list", 0, "litellm_params", "auth_header_name"], "Content-Type"),
     "model_list[0].litellm_params.auth_header_name"),
    (_set(["model_list", 0, "litellm_params", "weight"], -1), "model_list[0].litellm_params.weight"),
    (_set(["model_list"], {"gpt-4o": {}}), "model_list"),
], ids=["auth_header_format-without-api_key", "reserved-auth-header-name", "negative-weight", "model_list-not-a-list"])
def test_an_invalid_config_is_refused_naming_the_field(wasm, mutate, field):
    cfg = mutate(copy.deepcopy(valid_config()))
    exited, log = Envoy.expect_refused(cfg)
    assert exited
    assert field in log, f"no log line names {field}:\n{log[-3000:]}"


def test_a_config_that_is_not_json_is_refused(wasm):
    exited, log = Envoy.expect_refused('{"model_list": [')
    assert exited and "Unable to create Wasm plugin llm_router" in log


def test_the_valid_base_config_loads(start_envoy, make_mock):
    passthrough = make_mock("openai")
    envoy = start_envoy(json.dumps(valid_config()), clusters_for(passthrough=passthrough))
    assert client.get(envoy.base_url, "/healthz").status == 200
