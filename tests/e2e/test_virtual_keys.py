"""Virtual keys and teams against real Envoy, as a platform team runs them: one key per department, each
allowed its own models (by name, by team, by access group, by wildcard, through aliases), the gateway's
master key for the admins, and an attacker holding a guessed, blocked or expired key.

Keys are configured the way LiteLLM stores them — the SHA-256 hex of the raw `sk-...` key (`token`) — or read
raw from Envoy's environment (`key: os.environ/NAME`); the clients keep their `sk-...` keys. A refused request
reaches no provider, and neither the keys nor their hashes appear in Envoy's log."""

from __future__ import annotations

import hashlib

import openai
import pytest

from .support import client
from .support.checks import expect_error, expect_no_secrets, expect_routed, expect_upstream
from .support.envoy import Envoy, clusters_for
from .support.plugin import chat, deployment, plugin_config

MASTER = "sk-master-7f3a"
FINANCE = "sk-finance-91c2"  # read from Envoy's environment (key: os.environ/FINANCE_KEY)
SUPPORT = "sk-support-5d10"
RESEARCH = "sk-research-a1b7"
INTERN = "sk-intern-3e44"
BLOCKED = "sk-leaked-0bad"
EXPIRED = "sk-expired-77aa"
PROVIDER = "sk-provider-c0de"
CLIENT_KEYS = (MASTER, FINANCE, SUPPORT, RESEARCH, INTERN, BLOCKED, EXPIRED)
CHAT = "/v1/chat/completions"


def litellm_hash(raw: str) -> str:
    """LiteLLM's `hash_token` (litellm/proxy/_types.py): the hex SHA-256 of the raw key."""
    return hashlib.sha256(raw.encode()).hexdigest()


def gateway_config(oa_url: str, master_key=MASTER) -> dict:
    base = oa_url + "/v1"
    cfg = plugin_config(
        [deployment("gpt-4o", "openai/gpt-4o", base, api_key=PROVIDER, id="gpt4o",
                    model_info={"access_groups": ["Finance"]}),
         deployment("gpt-4o-mini", "openai/gpt-4o-mini", base, api_key=PROVIDER, id="mini",
                    model_info={"access_groups": ["finance", "support"]}),
         deployment("o3", "openai/o3", base, api_key=PROVIDER, id="o3"),
         deployment("openai/*", "openai/*", base, api_key=PROVIDER, id="wild")],
        aliases={"best": "gpt-4o"}, master_key=master_key)
    cfg["teams"] = [
        {"team_id": "team-finance", "team_alias": "Finance", "models": ["finance"], "max_budget": 500},
        {"team_id": "team-interns", "team_alias": "Interns", "models": ["gpt-4o-mini"], "blocked": True},
    ]
    cfg["keys"] = [
        {"key": "os.environ/FINANCE_KEY", "key_alias": "finance-app", "team_id": "team-finance", "rpm_limit": 60},
        {"token": litellm_hash(SUPPORT), "key_alias": "support-bot", "models": ["support"],
         "aliases": {"fast": "gpt-4o-mini"}},
        {"token": litellm_hash(RESEARCH).upper(), "key_alias": "research", "models": ["openai/*", "best"]},
        {"token": litellm_hash(INTERN), "key_alias": "intern", "team_id": "team-interns"},
        {"token": litellm_hash(BLOCKED), "key_alias": "leaked", "blocked": True},
        {"token": litellm_hash(EXPIRED), "key_alias": "contractor", "expires": "2024-06-30T17:00:00Z"},
    ]
    return cfg


@pytest.fixture(scope="module")
def gateway(make_module_mock, start_module_envoy):
    oa = make_module_mock("openai", "oa")
    envoy = start_module_envoy(gateway_config(oa.url), clusters_for(oa), host_env={"FINANCE_KEY": FINANCE})
    return envoy, oa


def call(envoy, key, model, **headers):
    if key is not None:
        headers.setdefault("authorization", f"Bearer {key}")
    return client.post_json(envoy.base_url, CHAT, chat(model), headers=headers)


# (who, model asked for) → the group that serves it, or the refusal LiteLLM gives.
ALLOWED = [
    (FINANCE, "gpt-4o", "gpt-4o"),            # the team's access group "finance" (case-folded)
    (FINANCE, "gpt-4o-mini", "gpt-4o-mini"),  # also in "finance"
    (FINANCE, "best", "gpt-4o"),              # a router alias of an allowed group
    (SUPPORT, "gpt-4o-mini", "gpt-4o-mini"),  # the key's access group "support"
    (SUPPORT, "fast", "gpt-4o-mini"),         # the key's own alias
    (RESEARCH, "openai/gpt-4.1", "openai/*"),  # a wildcard entry of the key
    (RESEARCH, "best", "gpt-4o"),             # a router alias named in the key's models
    (MASTER, "o3", "o3"),                     # the master key calls anything
]
DENIED = [
    (FINANCE, "o3", "team_model_access_denied"),
    (SUPPORT, "gpt-4o", "key_model_access_denied"),
    (SUPPORT, "best", "key_model_access_denied"),
    (RESEARCH, "gpt-4o-mini", "key_model_access_denied"),
    (RESEARCH, "o3", "key_model_access_denied"),
    (SUPPORT, "no-such-model", "key_model_access_denied"),  # a restricted key learns nothing about the catalogue
]


@pytest.mark.parametrize("key,model,group", ALLOWED, ids=[f"{k[3:10]}-{m}" for k, m, _ in ALLOWED])
def test_a_key_calls_the_models_it_is_allowed(gateway, key, model, group):
    envoy, oa = gateway
    resp = call(envoy, key, model)
    assert resp.status == 200, resp
    assert resp.headers["x-llm-router-model-group"] == group
    rec = oa.last()
    expect_upstream(rec, path=CHAT, host=oa.authority, headers={"authorization": f"Bearer {PROVIDER}"})
    expect_no_secrets(str(rec.headers), CLIENT_KEYS, "the provider's request headers")


@pytest.mark.parametrize("key,model,kind", DENIED, ids=[f"{k[3:10]}-{m}" for k, m, _ in DENIED])
def test_a_key_asking_for_another_department_s_model_is_refused_before_any_provider(gateway, key, model, kind):
    envoy, oa = gateway
    before = oa.count
    resp = call(envoy, key, model)
    err = expect_error(resp, 401, kind, type=kind, param="model")
    who = "team" if kind.startswith("team") else "key"
    assert err["message"].startswith(f"{who} not allowed to access model. This {who} can only access models=[")
    assert err["message"].endswith(f"Tried to access {model}")
    assert oa.count == before, "a refused request reached the provider"


@pytest.mark.parametrize("key,code,kind", [
    (None, "invalid_api_key", "authentication_error"),
    ("sk-guessed-0000", "invalid_api_key", "authentication_error"),
    (litellm_hash(SUPPORT), "invalid_api_key", "authentication_error"),  # the stored hash is not a key
    (BLOCKED, "key_blocked", "auth_error"),
    (EXPIRED, "expired_key", "expired_key"),
    (INTERN, "team_blocked", "auth_error"),
], ids=["no-key", "guessed", "hash-as-key", "blocked", "expired", "team-blocked"])
def test_an_attacker_s_key_is_refused_at_the_headers(gateway, key, code, kind):
    envoy, oa = gateway
    before = oa.count
    err = expect_error(call(envoy, key, "gpt-4o-mini"), 401, code, type=kind)
    assert oa.count == before
    expect_no_secrets(err["message"], CLIENT_KEYS + (litellm_hash(SUPPORT),), "the error message")
    if code == "expired_key":
        assert err["message"].startswith("Authentication Error - Expired Key. Key Expiry time 2024-06-30T17:00:00Z")


def test_keys_arrive_in_any_header_an_sdk_uses(gateway):
    envoy, _ = gateway
    assert call(envoy, None, "gpt-4o-mini", **{"x-api-key": SUPPORT}).status == 200
    assert call(envoy, None, "gpt-4o-mini", **{"api-key": SUPPORT}).status == 200
    expect_error(call(envoy, None, "gpt-4o", **{"x-api-key": SUPPORT}), 401, "key_model_access_denied")


def test_the_model_list_shows_each_key_only_what_it_may_call(gateway):
    envoy, _ = gateway

    def ids(key):
        resp = client.get(envoy.base_url, "/v1/models", headers={"authorization": f"Bearer {key}"})
        assert resp.status == 200, resp
        return [m["id"] for m in resp.json()["data"]]

    assert ids(MASTER) == ["gpt-4o", "gpt-4o-mini", "o3", "openai/*", "best"]
    assert ids(FINANCE) == ["gpt-4o", "gpt-4o-mini", "best"]
    assert ids(SUPPORT) == ["gpt-4o-mini", "fast"]
    assert ids(RESEARCH) == ["openai/*", "best"]
    expect_error(client.get(envoy.base_url, "/v1/models", headers={"authorization": f"Bearer {BLOCKED}"}),
                 401, "key_blocked")


def test_the_health_report_is_for_the_master_key_only(gateway):
    envoy, _ = gateway
    ok = client.get(envoy.base_url, "/llm-router/health", headers={"authorization": f"Bearer {MASTER}"})
    assert ok.status == 200 and ok.json()["deployments"]
    expect_error(client.get(envoy.base_url, "/llm-router/health", headers={"authorization": f"Bearer {FINANCE}"}),
                 401, "admin_only")


def test_the_openai_sdk_raises_its_typed_error_for_a_denial(gateway):
    envoy, _ = gateway
    sdk = openai.OpenAI(base_url=envoy.base_url + "/v1", api_key=SUPPORT, max_retries=0, timeout=10)
    try:
        assert sdk.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}]).choices
        with pytest.raises(openai.AuthenticationError) as e:
            sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 401 and e.value.code == "key_model_access_denied"
        assert [m.id for m in sdk.models.list()] == ["gpt-4o-mini", "fast"]
    finally:
        sdk.close()
    expired = openai.OpenAI(base_url=envoy.base_url + "/v1", api_key=EXPIRED, max_retries=0, timeout=10)
    try:
        with pytest.raises(openai.AuthenticationError) as e:
            expired.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert e.value.code == "expired_key"
    finally:
        expired.close()


def test_envoy_s_log_names_keys_by_alias_never_by_key_or_hash(gateway):
    envoy, _ = gateway
    call(envoy, SUPPORT, "o3")
    text = envoy.log_text()
    assert "key `support-bot` refused: key_model_access_denied" in text
    expect_no_secrets(text, CLIENT_KEYS + (PROVIDER,) + tuple(litellm_hash(k) for k in CLIENT_KEYS), "Envoy's log")
    expect_no_secrets(text.lower(), (litellm_hash(RESEARCH).lower(),), "Envoy's log")
    # Limits and budgets are enforced (test_rate_limits.py, test_budgets.py): no warning about them,
    # but the unpriced deployments a budget cannot count are named.
    assert "keys[0].rpm_limit" not in text and "teams[0].max_budget" not in text
    assert "its requests cost 0 against budgets" in text


def test_with_keys_and_no_master_key_nobody_calls_without_a_key(make_mock, start_envoy):
    oa = make_mock("openai", "open")
    envoy = start_envoy(gateway_config(oa.url, master_key=None), clusters_for(oa), host_env={"FINANCE_KEY": FINANCE})
    expect_error(call(envoy, None, "gpt-4o-mini"), 401, "invalid_api_key")
    expect_error(client.get(envoy.base_url, "/v1/models"), 401, "invalid_api_key")
    assert call(envoy, SUPPORT, "gpt-4o-mini").status == 200
    assert oa.count == 1


def test_a_raw_key_pasted_into_the_file_refuses_the_config(wasm):
    cfg = gateway_config("http://127.0.0.1:9")
    cfg["keys"].append({"key": "sk-pasted-into-git"})
    _, log = Envoy.expect_refused(cfg, host_env={"FINANCE_KEY": FINANCE})
    assert "keys[6].key: must be an os.environ/NAME reference" in log
    assert "sk-pasted-into-git" not in log


def test_a_virtual_key_s_request_still_fails_over(make_mock, start_envoy):
    """The failover pass replays a request whose client key the router already replaced with the provider's: it
    is accepted on its signed state, not re-identified."""
    a1, a2 = make_mock("openai", "a1"), make_mock("openai", "a2")
    cfg = plugin_config(
        [deployment("a", "openai/a-one", a1.url + "/v1", api_key="sk-a1", id="a1", weight=1),
         deployment("a", "openai/a-two", a2.url + "/v1", api_key="sk-a2", id="a2", weight=0)],
        allowed_fails=100, num_retries=1, master_key=MASTER)
    cfg["keys"] = [{"token": litellm_hash(SUPPORT), "key_alias": "support-bot", "models": ["a"]}]
    envoy = start_envoy(cfg, clusters_for(a1, a2, passthrough=a1), failover=True)
    a1.respond(status=500)
    resp = call(envoy, SUPPORT, "a")
    expect_routed(resp, "a2", "a")
    assert resp.headers["x-llm-router-attempts"] == "2"
    expect_upstream(a2.last(), path=CHAT, host=a2.authority, headers={"authorization": "Bearer sk-a2"})
