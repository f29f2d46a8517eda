"""simple-shuffle: requests spread over a group's deployments by weight, else rpm, else tpm, else evenly."""

from __future__ import annotations

import collections

import pytest

from .support import client
from .support.envoy import clusters_for
from .support.plugin import chat, deployment, plugin_config

N = 400
# 0.07 is over 3 standard deviations of a share of 0.75 over 400 draws (sd 0.022): a false alarm is rarer
# than 1 run in 500.
TOLERANCE = 0.07


@pytest.fixture(scope="module")
def world(make_module_mock, start_module_envoy):
    heavy = make_module_mock("openai", "heavy")
    light = make_module_mock("openai", "light")
    h, l_ = heavy.url + "/v1", light.url + "/v1"
    model_list = []
    for group, heavy_params, light_params in [
        ("by-weight", {"weight": 3}, {"weight": 1}),
        ("by-rpm", {"rpm": 3000}, {"rpm": 1000}),
        ("by-tpm", {"tpm": 3_000_000}, {"tpm": 1_000_000}),
        ("weight-before-rpm", {"weight": 3, "rpm": 1000}, {"weight": 1, "rpm": 3000}),
        ("rpm-before-tpm", {"rpm": 3000, "tpm": 1_000_000}, {"rpm": 1000, "tpm": 3_000_000}),
        ("uniform", {}, {}),
    ]:
        model_list.append(deployment(group, "openai/model-h", h, api_key="k", id=f"{group}-heavy", **heavy_params))
        model_list.append(deployment(group, "openai/model-l", l_, api_key="k", id=f"{group}-light", **light_params))
    envoy = start_module_envoy(plugin_config(model_list), clusters_for(heavy, light), label="balancing")
    return envoy, heavy, light


def shares(world, group: str) -> float:
    envoy, heavy, light = world
    heavy.reset()
    light.reset()
    counts: collections.Counter = collections.Counter()
    with client.Session(envoy.base_url) as s:
        for _ in range(N):
            r = s.post_json("/v1/chat/completions", chat(group))
            assert r.status == 200, r
            counts[r.headers["x-llm-router-deployment"]] += 1
    assert set(counts) <= {f"{group}-heavy", f"{group}-light"}, counts
    # What the client was told matches what the providers saw.
    assert (heavy.count, light.count) == (counts[f"{group}-heavy"], counts[f"{group}-light"])
    assert {r.model for r in heavy.requests} <= {"model-h"} and {r.model for r in light.requests} <= {"model-l"}
    return counts[f"{group}-heavy"] / N


@pytest.mark.parametrize("group", ["by-weight", "by-rpm", "by-tpm", "weight-before-rpm", "rpm-before-tpm"])
def test_three_to_one_spreads_three_quarters_to_the_heavy_deployment(world, group):
    share = shares(world, group)
    assert abs(share - 0.75) <= TOLERANCE, f"{group}: heavy deployment got {share:.3f} of {N} requests"


def test_without_weights_requests_spread_evenly(world):
    share = shares(world, "uniform")
    assert abs(share - 0.5) <= 0.08, f"uniform: first deployment got {share:.3f} of {N} requests"
