"""Real-world LiteLLM config shapes load unchanged and route where LiteLLM would send them (issue 11).

For every fixture of tests/fixtures/litellm/ (support/litellm_corpus.py reads them with their expectations):
- `llm-router check --format json` gives the stated outcome: exit status, the errors of a refused config, the
  warnings (every skipped deployment exactly once), and the summary of what serves (deployments, groups, the
  clusters the requests below need, the environment variables read);
- the JSON `check --print-json` hands the filter is what LiteLLM's own reader makes of the file: PyYAML's
  `safe_load` (as tests/e2e/test_yaml_pyyaml.py compares them), with `include:` resolved as LiteLLM does; a file
  PyYAML refuses (LiteLLM cannot start on it) must be refused as YAML;
- `llm-router envoy` writes a bootstrap with a cluster for every upstream the requests below go to (and, where the
  expectation says, exactly the VM's host_env_keys);
- a config that loads goes into real Envoy as is, and one request per provider reaches a mock standing in for
  that provider's cluster with the right `:authority`, path, auth header and `model` (the providers' real hosts
  are unreachable here; every cluster the router names is a local mock, so a request sent anywhere else shows
  up on the passthrough mock or fails). One Envoy per fixture serves all its providers;
- a config `check` refuses (and PyYAML reads) is refused by the filter in Envoy too, with the same field paths.

Known gaps are marked per fixture and phase in its expectation (`xfail`, strict: they fail once fixed).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .support import client
from .support.checks import expect_error, expect_no_secrets, expect_upstream
from .support.envoy import REPO, Envoy, clusters_for
from .support.litellm_corpus import FIXTURES as CORPUS_DIR, all_fixtures, litellm_include
from .support.plugin import chat
from .test_yaml_pyyaml import READ_ERRORS, REFUSED, pyyaml, same

BIN = REPO / "target" / "debug" / "llm-router"
FIXTURES = all_fixtures()


def params(phase: str, only_loading: bool = False) -> list:
    out = []
    for f in FIXTURES:
        if only_loading and f.outcome != "loads":
            continue
        marks = [pytest.mark.xfail(strict=True, reason=f.xfail[phase])] if phase in f.xfail else []
        out.append(pytest.param(f, id=f.name, marks=marks))
    return out


@pytest.fixture(scope="session")
def cli() -> Path:
    subprocess.run(["cargo", "build", "-q", "-p", "llm-router-cli"], cwd=REPO, check=True, timeout=900)
    return BIN


def run_check(cli: Path, fixture, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in fixture.env.items()))
    # Only PATH from this process: a key set in the developer's shell must not make a fixture load.
    return subprocess.run([str(cli), "check", str(fixture.path), "--env-file", str(env_file), *extra],
                          capture_output=True, text=True, timeout=30, env={"PATH": os.environ.get("PATH", "")})


def expect_diags(report: dict, wanted: list, level: str) -> None:
    """Every expected (field path, substring) is among `check --format json`'s errors or warnings."""
    got = [(d["path"], d["message"]) for d in report[level]]
    for field, says in wanted:
        assert any(f == field and says in m for f, m in got), \
            f"no {level[:-1]} at {field} saying {says!r}; {level}:\n" + "\n".join(f"{f}: {m}" for f, m in got)


def test_every_fixture_has_an_expectation():
    names = {p.name for p in CORPUS_DIR.iterdir() if p.is_file()}
    for n in names:
        if n.endswith(".yaml"):
            assert n[:-5] + ".expect.json" in names, f"{n} has no expectation"
        elif n.endswith(".expect.json"):
            assert n[: -len(".expect.json")] + ".yaml" in names, f"{n} has no fixture"
    assert len(FIXTURES) >= 20


@pytest.mark.parametrize("fixture", params("check"))
def test_check_gives_the_stated_outcome(cli, tmp_path, fixture):
    proc = run_check(cli, fixture, tmp_path, "--format", "json")
    assert proc.returncode == (0 if fixture.outcome == "loads" else 1), f"exit {proc.returncode}:\n{proc.stdout}"
    report = json.loads(proc.stdout)
    assert report["ok"] is (fixture.outcome == "loads"), report
    expect_diags(report, fixture.errors, "errors")
    if fixture.outcome == "loads":
        assert not report["errors"], report["errors"]
    expect_diags(report, fixture.warnings, "warnings")
    # Each unservable deployment is skipped with exactly one warning, and no other deployment is.
    skipped = sorted(w["path"].rsplit(".", 2)[0] for w in report["warnings"] if w.get("kind") == "skipped")
    assert skipped == sorted(fixture.skipped), report["warnings"]
    if fixture.outcome == "loads":
        summary = report["summary"]
        assert sorted(s["path"].rsplit(".", 2)[0] for s in summary["skipped"]) == sorted(fixture.skipped), summary
        if fixture.serves is not None:
            assert (summary["deployments"], len(summary["groups"])) == fixture.serves, summary
        missing = {r.upstream.cluster for r in fixture.requests} - {c["name"] for c in summary["clusters"]}
        assert not missing, f"no cluster for {sorted(missing)} in {summary['clusters']}"
        if fixture.host_env_keys is not None:
            assert sorted(summary["env"]) == sorted(fixture.host_env_keys), summary["env"]
    expect_no_secrets(proc.stdout + proc.stderr, [v for k, v in fixture.env.items() if "KEY" in k], "check's report")


@pytest.mark.parametrize("fixture", params("pyyaml"))
def test_print_json_is_what_pyyaml_reads(cli, tmp_path, fixture):
    main = pyyaml(fixture.path.read_text())
    if main == REFUSED:  # LiteLLM cannot start on it either: the tool must refuse the file as YAML
        proc = run_check(cli, fixture, tmp_path, "--print-json")
        assert fixture.outcome == "refused" and proc.returncode == 1, proc.stderr
        assert not proc.stdout.strip() or any(m in proc.stderr for m in READ_ERRORS), proc.stdout
        return
    assert isinstance(main, dict), f"PyYAML does not read {fixture.path.name} as a mapping: {main!r}"
    included = [pyyaml(p.read_text()) for p in fixture.included]
    assert all(isinstance(d, dict) for d in included), included
    want = litellm_include(main, included)
    proc = run_check(cli, fixture, tmp_path, "--print-json")
    assert proc.stdout.strip(), proc.stderr
    got = json.loads(proc.stdout)
    assert same(want, got), f"PyYAML+include: {want!r}\nllm-router: {got!r}"


@pytest.mark.parametrize("fixture", params("generate", only_loading=True))
def test_envoy_command_writes_a_cluster_per_upstream(cli, tmp_path, fixture):
    """`llm-router envoy` on the config as pasted: a bootstrap with a cluster for every upstream requested, and
    Envoy passes the VM only the variables the router uses."""
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in fixture.env.items()))
    out = tmp_path / "bootstrap.json"
    proc = subprocess.run([str(cli), "envoy", str(fixture.path), "--env-file", str(env_file), "-o", str(out)],
                          capture_output=True, text=True, timeout=30, env={"PATH": os.environ.get("PATH", "")})
    assert proc.returncode == 0, proc.stderr
    bootstrap = json.loads(out.read_text())
    names = {c["name"] for c in bootstrap["static_resources"]["clusters"]}
    missing = {r.upstream.cluster for r in fixture.requests} - names
    assert not missing, f"no cluster for {sorted(missing)} among {sorted(names)}"
    if fixture.host_env_keys is not None:
        vm_env = [f["typed_config"]["config"]["vm_config"]["environment_variables"]
                  for ls in bootstrap["static_resources"]["listeners"] for fc in ls["filter_chains"]
                  for nf in fc["filters"] for f in nf.get("typed_config", {}).get("http_filters", [])
                  if f["name"] == "envoy.filters.http.wasm" and "configuration" in f["typed_config"]["config"]]
        assert len(vm_env) == 1, vm_env
        assert sorted(vm_env[0].get("host_env_keys", [])) == sorted(fixture.host_env_keys), vm_env[0]


@pytest.mark.parametrize("fixture", params("envoy", only_loading=True))
def test_one_request_per_provider_reaches_its_upstream(cli, tmp_path, make_mock, start_envoy, fixture):
    proc = run_check(cli, fixture, tmp_path, "--print-json")
    assert proc.returncode == 0, proc.stderr
    plugin_config = proc.stdout
    # One mock per cluster the expectations name: a request on the wrong cluster lands on another mock.
    mocks: dict = {}
    for r in fixture.requests:
        if r.upstream.cluster not in mocks:
            mocks[r.upstream.cluster] = make_mock(r.mock, r.upstream.cluster)
    passthrough = make_mock("openai", "passthrough")
    clusters = clusters_for(passthrough=passthrough)
    clusters.update({c: (m.host, m.port) for c, m in mocks.items()})
    envoy = start_envoy(plugin_config, clusters, env=fixture.env)
    auth = {"authorization": f"Bearer {fixture.client_key}"} if fixture.client_key else None

    for r in fixture.requests:
        mock = mocks[r.upstream.cluster]
        before, before_all = mock.count, sum(m.count for m in mocks.values())
        body = chat(r.model, **r.request) if r.endpoint.endswith(("chat/completions", "messages")) else \
            {"model": r.model, "prompt": "Say hi", **r.request} if r.endpoint.endswith("completions") else \
            {"model": r.model, "input": "hi", **r.request}
        resp = client.post_json(envoy.base_url, r.endpoint, body, auth)
        assert resp.status == 200, f"{r.model}: {resp!r}\n" + envoy.log_tail(20)
        assert mock.count == before + 1, f"{r.model} did not reach {r.upstream.cluster}"
        assert sum(m.count for m in mocks.values()) == before_all + 1, f"{r.model} reached more than one upstream"
        rec = expect_upstream(mock.last(), path=r.path, host=r.upstream.authority, model=r.upstream_model,
                              headers=r.headers, absent=r.absent)
        for k, v in r.body.items():
            assert rec.json.get(k) == v, f"{r.model}: upstream body {k}={rec.json.get(k)!r}, expected {v!r}"

    for group in fixture.not_servable:
        err = expect_error(client.post_json(envoy.base_url, "/v1/chat/completions", chat(group), auth), 400,
                           "model_not_servable")
        assert f"`{group}`" in err["message"], err
    if fixture.client_key and fixture.requests:
        # The master key is the gateway's: without it no request goes anywhere.
        seen = sum(m.count for m in mocks.values())
        r = fixture.requests[0]
        expect_error(client.post_json(envoy.base_url, "/v1/chat/completions", chat(r.model)), 401, None)
        assert sum(m.count for m in mocks.values()) == seen
    assert passthrough.count == 0, [(x.path, x.headers.get("host")) for x in passthrough.requests]
    expect_no_secrets(envoy.log_text(), [v for k, v in fixture.env.items() if "KEY" in k], "the Envoy log")


REFUSED_WITH_JSON = [p for p in params("envoy") if p.values[0].outcome == "refused"
                     and pyyaml(p.values[0].path.read_text()) != REFUSED]


@pytest.mark.parametrize("fixture", REFUSED_WITH_JSON)
def test_the_filter_refuses_it_for_the_same_reasons(cli, tmp_path, wasm, fixture):
    """What `check` refuses, the filter in Envoy refuses too, with a log line per error (field path and why)."""
    proc = run_check(cli, fixture, tmp_path, "--print-json")
    assert proc.returncode == 1 and proc.stdout.strip(), proc.stderr
    exited, log = Envoy.expect_refused(proc.stdout, env=fixture.env)
    assert exited, log[-3000:]
    lines = [x.split("llm-router config error: ", 1)[1] for x in log.splitlines() if "llm-router config error: " in x]
    for field, says in fixture.errors:
        assert any(x.startswith(f"{field}: ") and says in x for x in lines), (field, says, lines)
    expect_no_secrets(log, [v for k, v in fixture.env.items() if "KEY" in k], "the Envoy log")
