"""`llm-router key new` and `llm-router key import` against real Envoy with the filter: the key `key new` printed
(once, on stderr) authenticates with the entry it wrote on stdout, and the entries imported from a LiteLLM
export (tests/fixtures/litellm-keys: `GET /key/list?return_full_object=true` and `GET /team/list`, LiteLLM's
own field names) allow and refuse as they were configured in LiteLLM: the team's models, the key's own
models and aliases, rpm limits (429), blocked and expired keys (401). The raw keys of the fixture's hashes are
the test's; neither they nor the generated key appear in Envoy's log."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess

import pytest

from .support import client
from .support.checks import expect_error, expect_no_secrets, expect_routed
from .support.envoy import REPO, clusters_for
from .support.plugin import chat, deployment, plugin_config

CLI = ["cargo", "run", "-q", "-p", "llm-router-cli", "--"]
FIXTURES = REPO / "tests" / "fixtures" / "litellm-keys"
CHAT = "/v1/chat/completions"
MASTER = "sk-master-keycli-11"
PROVIDER = "sk-provider-keycli"
# The raw keys behind the fixture's hashes (LiteLLM exports only the hashes).
RESEARCH = "sk-import-research-4f1c"
SUPPORT = "sk-import-support-9b2e"
LEAKED = "sk-import-leaked-0bad"
CONTRACTOR = "sk-import-contractor-77aa"
UI_SESSION = "sk-ui-session-1111"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + [str(a) for a in args], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ))


def litellm_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The CLI's output: a new key (raw key, entry) and the imported keys and teams, checked by `check`."""
    new = cli("key", "new", "--alias", "keycli-app", "--team", "research", "--models", "gpt-4o-mini", "--rpm", "2",
              "--format", "json")
    assert new.returncode == 0, new.stderr
    raw = [line[len("key: "):] for line in new.stderr.splitlines() if line.startswith("key: ")]
    assert len(raw) == 1 and re.fullmatch(r"sk-[A-Za-z0-9_-]{32}", raw[0]), new.stderr
    raw = raw[0]
    assert raw not in new.stdout
    new_entry = json.loads(new.stdout)["keys"][0]
    assert new_entry["token"] == litellm_hash(raw)

    imported = cli("key", "import", FIXTURES / "key-list.json", "--teams", FIXTURES / "team-list.json",
                   "--format", "json")
    assert imported.returncode == 0, imported.stderr
    doc = json.loads(imported.stdout)
    assert len([line for line in imported.stderr.splitlines() if "dropped fields" in line]) == 1, imported.stderr

    cfg = plugin_config([], master_key=MASTER)  # model_list filled in by the gateway fixture
    cfg["teams"] = doc["teams"]
    cfg["keys"] = doc["keys"] + [new_entry]
    return raw, cfg


@pytest.fixture(scope="module")
def gateway(made, make_module_mock, start_module_envoy, tmp_path_factory):
    raw, cfg = made
    oa = make_module_mock("openai", "oa")
    base = oa.url + "/v1"
    cfg["model_list"] = [deployment("gpt-4o", "openai/gpt-4o", base, api_key=PROVIDER, id="gpt4o"),
                         deployment("gpt-4o-mini", "openai/gpt-4o-mini", base, api_key=PROVIDER, id="mini")]
    # The operator's step before deploying: the filter's own loader accepts what the CLI wrote.
    path = tmp_path_factory.mktemp("keycli") / "config.json"
    path.write_text(json.dumps(cfg))
    check = cli("check", path, "--format", "json")
    report = json.loads(check.stdout)
    assert check.returncode == 0 and report["ok"], check.stdout + check.stderr
    envoy = start_module_envoy(cfg, clusters_for(oa))
    return envoy, oa, raw


def call(envoy, key, model):
    return client.post_json(envoy.base_url, CHAT, chat(model), headers={"authorization": f"Bearer {key}"})


def test_a_key_made_by_key_new_authenticates_with_its_limits(gateway):
    envoy, oa, raw = gateway
    expect_routed(call(envoy, raw, "gpt-4o-mini"), "mini", "gpt-4o-mini")
    # Its own models: gpt-4o is refused though the team (research) has it.
    expect_error(call(envoy, raw, "gpt-4o"), 401, "key_model_access_denied", param="model")
    expect_routed(call(envoy, raw, "gpt-4o-mini"), "mini", "gpt-4o-mini")
    before = oa.count
    err = expect_error(call(envoy, raw, "gpt-4o-mini"), 429, "429")
    assert "keycli-app" in err["message"] and oa.count == before, err
    # The key differs by one character: unknown.
    other = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    expect_error(call(envoy, other, "gpt-4o-mini"), 401, "invalid_api_key")


def test_imported_keys_allow_what_litellm_allowed(gateway):
    envoy, oa, _ = gateway
    # research-app: no models of its own, so its team's (gpt-4o, gpt-4o-mini).
    expect_routed(call(envoy, RESEARCH, "gpt-4o"), "gpt4o", "gpt-4o")
    expect_routed(call(envoy, RESEARCH, "gpt-4o-mini"), "mini", "gpt-4o-mini")
    # support-bot: gpt-4o-mini only, and its own alias `fast` for it; rpm_limit 2 (its own, not its
    # budget table's 50), and a refused model counts nothing.
    expect_routed(call(envoy, SUPPORT, "fast"), "mini", "gpt-4o-mini")
    expect_error(call(envoy, SUPPORT, "gpt-4o"), 401, "key_model_access_denied", param="model")
    expect_routed(call(envoy, SUPPORT, "gpt-4o-mini"), "mini", "gpt-4o-mini")
    before = oa.count
    err = expect_error(call(envoy, SUPPORT, "gpt-4o-mini"), 429, "429")
    assert "support-bot" in err["message"] and oa.count == before, err


def test_imported_refusals_hold(gateway):
    envoy, oa, _ = gateway
    before = oa.count
    expect_error(call(envoy, LEAKED, "gpt-4o-mini"), 401, "key_blocked")
    expect_error(call(envoy, CONTRACTOR, "gpt-4o"), 401, "expired_key")
    # The admin UI's session token was not imported.
    expect_error(call(envoy, UI_SESSION, "gpt-4o-mini"), 401, "invalid_api_key")
    assert oa.count == before
    expect_routed(call(envoy, MASTER, "gpt-4o"), "gpt4o", "gpt-4o")


def test_no_key_or_hash_in_envoy_s_log(gateway):
    envoy, _, raw = gateway
    keys = (raw, RESEARCH, SUPPORT, LEAKED, CONTRACTOR, UI_SESSION)
    expect_no_secrets(envoy.log_text(), keys + tuple(litellm_hash(k) for k in keys), "Envoy's log")
