"""What the benchmark sends and what the router is configured with (deterministic, stdlib only).

- chat_body(size): a realistic OpenAI chat-completions body for the hot group `gpt-4o`, exactly `size`
  bytes (system prompt, multi-turn conversation with code, escapes and non-ASCII text, sampling params).
- router_config(...): a LiteLLM-shaped plugin config. 10 model groups x 4 deployments = 40 deployments on
  3 provider shapes (OpenAI-compatible, Azure, Anthropic); `extra_deployments` adds more groups (the
  500-deployment table) without touching the hot group. Every api_base is a real-looking provider URL;
  Envoy's clusters for them (Istio names `outbound|443||host`) all point at the local nginx.
- NGINX_BODY: the static chat completion nginx answers to every POST.
"""

from __future__ import annotations

import json

HOT_GROUP = "gpt-4o"
MASTER_KEY = "sk-bench-master-7f3a9c"
# Variant 3k: the virtual key wrk sends (one of KEYS keys in TEAMS teams).
BENCH_KEY = "sk-bench-dept-0500-c4d1"
KEYS, TEAMS = 1000, 10

# The VM environment (vm_config.environment_variables.key_values) the config's os.environ/ names need.
ENV = {
    "LLM_GATEWAY_KEY": MASTER_KEY,
    "OPENAI_API_KEY": "sk-bench-openai-primary",
    "OPENAI_API_KEY_BATCH": "sk-bench-openai-batch",
    "AZURE_EASTUS_KEY": "bench-azure-eastus",
    "AZURE_SWC_KEY": "bench-azure-swedencentral",
    "AZURE_WESTEU_KEY": "bench-azure-westeurope",
    "ANTHROPIC_API_KEY": "sk-ant-bench",
    "GROQ_API_KEY": "gsk-bench",
    "TOGETHER_API_KEY": "tg-bench",
    "FIREWORKS_API_KEY": "fw-bench",
    "DEEPSEEK_API_KEY": "ds-bench",
    "VLLM_API_KEY": "vllm-bench",
}

NGINX_BODY = json.dumps({
    "id": "chatcmpl-bench0001", "object": "chat.completion", "created": 1732350000, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Sure - here is a short answer."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 57, "completion_tokens": 9, "total_tokens": 66},
    "system_fingerprint": "fp_bench",
}, separators=(",", ":"))


# ---- request bodies ------------------------------------------------------------------------------------
_SYSTEM = ("You are a senior software engineer helping a colleague review a pull request. Answer precisely, "
           "cite file names, and prefer small, testable changes.")
_TURNS = [
    ("user", "Here is the handler that keeps timing out under load:\n\n```python\nasync def fetch(session, url):\n"
             "    async with session.get(url, timeout=30) as r:\n        data = await r.json()\n        return "
             "data[\"items\"]\n```\nWhy would this hang when the upstream returns 502?"),
    ("assistant", "A 502 from the upstream usually comes with an HTML body, so `r.json()` raises "
                  "`ContentTypeError` \u2014 but that would not hang. The hang is more likely the connection "
                  "pool: each retry opens a new connection while the failed ones are never released. Check "
                  "`TCPConnector(limit=...)` and make sure every response is released (use `async with`)."),
    ("user", "We do use `async with`. The pool limit is 100 and we run 400 concurrent tasks. Logs show "
             "\"Connection pool is full, discarding connection\" \u2014 is that the same thing?"),
    ("assistant", "Not quite: that message comes from urllib3, not aiohttp, so some code path is still on "
                  "`requests`. Grep for `requests.Session` in `clients/legacy.py` \u2014 it is probably called "
                  "from the executor with a blocking timeout of 300\u00a0s, which stalls the event loop's "
                  "default thread pool (32 workers) once enough 502s pile up."),
    ("user", "Found it, thanks. Can you sketch a retry wrapper with jittered exponential backoff, capped at "
             "5 attempts and 20 s total, that only retries idempotent requests on 502/503/504 and "
             "connection errors? Keep it dependency-free.\n\nConstraints:\n- Python 3.11\n- must be "
             "cancellable\n- log each retry at INFO with the attempt number"),
]


def chat_body(size: int) -> bytes:
    """A chat body of exactly `size` bytes (>= ~280): the conversation is repeated as history and the last
    user message is padded to hit the size."""
    messages = [{"role": "system", "content": _SYSTEM if size >= 1000 else "You are a concise assistant."}]
    base = {"model": HOT_GROUP, "messages": messages, "temperature": 0.2, "max_tokens": 512,
            "user": "team-payments/reviewer-42"}
    if size < 1000:
        # Short prompt: one user message.
        messages.append({"role": "user", "content": ""})
    else:
        i = 0
        while len(json.dumps(base).encode()) < size - 1200:
            role, content = _TURNS[i % len(_TURNS)]
            messages.append({"role": role, "content": content})
            i += 1
        messages.append({"role": "user", "content": ""})
    filler = ("Summarise the trade-offs of retrying inside the client versus in the gateway, in three bullet "
              "points, and say which one you would pick for a payments service. ")
    text = ""
    while True:
        messages[-1]["content"] = text
        raw = json.dumps(base, ensure_ascii=False).encode()
        if len(raw) >= size:
            break
        missing = size - len(raw)
        text += filler[:missing] if missing < len(filler) else filler
    if len(raw) != size:  # the filler is ASCII without escapes, so this cannot overshoot
        raise AssertionError(f"chat body is {len(raw)} bytes, wanted {size}")
    json.loads(raw)
    return raw


# ---- plugin configuration ---------------------------------------------------------------------------------
def _dep(group, model, api_base, key, *, dep_id, **extra):
    params = {"model": model, "api_base": api_base, "api_key": f"os.environ/{key}"}
    info = {"id": dep_id}
    for k in ("max_input_tokens", "input_cost_per_token", "output_cost_per_token", "mode"):
        if k in extra:
            info[k] = extra.pop(k)
    params.update(extra)
    return {"model_name": group, "litellm_params": params, "model_info": info}


OPENAI = "https://api.openai.com/v1"
AZ_EASTUS = "https://acme-eastus.openai.azure.com"
AZ_SWC = "https://acme-swedencentral.openai.azure.com"
AZ_WESTEU = "https://acme-westeurope.openai.azure.com"
ANTHROPIC = "https://api.anthropic.com"
GROQ = "https://api.groq.com/openai/v1"
TOGETHER = "https://api.together.xyz/v1"
FIREWORKS = "https://api.fireworks.ai/inference/v1"
DEEPSEEK = "https://api.deepseek.com/v1"
VLLM = "http://vllm-llama.ml.svc.cluster.local:8000/v1"


def hot_group(rewrite: bool = True) -> list:
    """The hot group: 4 deployments on OpenAI and Azure. With `rewrite`, 3 of the 4 have an upstream model
    id other than `gpt-4o` (so the router rewrites the body's `model`), as in real configs (dated snapshots,
    Azure deployment names); without, all four are `gpt-4o` and the body is forwarded untouched."""
    az = "gpt-4o-eastus" if rewrite else "gpt-4o"
    az2 = "gpt-4o-swc" if rewrite else "gpt-4o"
    snap = "gpt-4o-2024-11-20" if rewrite else "gpt-4o"
    common = {"max_input_tokens": 128000, "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05}
    return [
        _dep("gpt-4o", "openai/gpt-4o", OPENAI, "OPENAI_API_KEY", dep_id="gpt-4o-openai", weight=2, **common),
        _dep("gpt-4o", f"azure/{az}", AZ_EASTUS, "AZURE_EASTUS_KEY", dep_id="gpt-4o-az-eastus",
             api_version="2024-10-21", weight=1, **common),
        _dep("gpt-4o", f"azure/{az2}", AZ_SWC, "AZURE_SWC_KEY", dep_id="gpt-4o-az-swc",
             api_version="2024-10-21", weight=1, **common),
        _dep("gpt-4o", f"openai/{snap}", OPENAI, "OPENAI_API_KEY_BATCH", dep_id="gpt-4o-openai-batch",
             weight=1, **common),
    ]


def other_groups() -> list:
    """Nine more groups of 4 (36 deployments), on every provider shape."""
    out = []
    # gpt-4o-mini: OpenAI + Azure
    for i, (model, base, key) in enumerate([("openai/gpt-4o-mini", OPENAI, "OPENAI_API_KEY"),
                                            ("azure/gpt-4o-mini-eastus", AZ_EASTUS, "AZURE_EASTUS_KEY"),
                                            ("azure/gpt-4o-mini-weu", AZ_WESTEU, "AZURE_WESTEU_KEY"),
                                            ("openai/gpt-4o-mini-2024-07-18", OPENAI, "OPENAI_API_KEY_BATCH")]):
        extra = {"api_version": "2024-10-21"} if model.startswith("azure/") else {}
        out.append(_dep("gpt-4o-mini", model, base, key, dep_id=f"gpt-4o-mini-{i}", rpm=30000,
                        max_input_tokens=128000, **extra))
    # Anthropic groups (the same API on several keys/workspaces)
    for group, model in [("claude-3-5-sonnet", "anthropic/claude-3-5-sonnet-20241022"),
                         ("claude-3-5-haiku", "anthropic/claude-3-5-haiku-20241022"),
                         ("claude-3-opus", "anthropic/claude-3-opus-20240229")]:
        for i in range(4):
            out.append(_dep(group, model, ANTHROPIC, "ANTHROPIC_API_KEY", dep_id=f"{group}-{i}",
                            max_input_tokens=200000, weight=1 + (i % 2)))
    # o1-mini and gpt-4.1 on Azure regions + OpenAI
    for group in ("o1-mini", "gpt-4.1"):
        for i, (base, key) in enumerate([(AZ_EASTUS, "AZURE_EASTUS_KEY"), (AZ_SWC, "AZURE_SWC_KEY"),
                                         (AZ_WESTEU, "AZURE_WESTEU_KEY")]):
            out.append(_dep(group, f"azure/{group}-{i}", base, key, dep_id=f"{group}-az-{i}",
                            api_version="2025-01-01-preview"))
        out.append(_dep(group, f"openai/{group}", OPENAI, "OPENAI_API_KEY", dep_id=f"{group}-openai"))
    # Embeddings: OpenAI + Azure
    for i, (model, base, key) in enumerate([("openai/text-embedding-3-small", OPENAI, "OPENAI_API_KEY"),
                                            ("azure/emb-3-small-eastus", AZ_EASTUS, "AZURE_EASTUS_KEY"),
                                            ("azure/emb-3-small-swc", AZ_SWC, "AZURE_SWC_KEY"),
                                            ("openai/text-embedding-3-small", OPENAI, "OPENAI_API_KEY_BATCH")]):
        extra = {"api_version": "2024-10-21"} if model.startswith("azure/") else {}
        out.append(_dep("text-embedding-3-small", model, base, key, dep_id=f"emb-3-small-{i}", mode="embedding",
                        **extra))
    # Open-weights models on OpenAI-compatible hosts
    for group, models in [
        ("llama-3.1-70b", [("groq/llama-3.1-70b-versatile", GROQ, "GROQ_API_KEY"),
                           ("together_ai/meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo", TOGETHER, "TOGETHER_API_KEY"),
                           ("fireworks_ai/accounts/fireworks/models/llama-v3p1-70b-instruct", FIREWORKS,
                            "FIREWORKS_API_KEY"),
                           ("hosted_vllm/meta-llama/Llama-3.1-70B-Instruct", VLLM, "VLLM_API_KEY")]),
        ("deepseek-chat", [("deepseek/deepseek-chat", DEEPSEEK, "DEEPSEEK_API_KEY"),
                           ("together_ai/deepseek-ai/DeepSeek-V3", TOGETHER, "TOGETHER_API_KEY"),
                           ("fireworks_ai/accounts/fireworks/models/deepseek-v3", FIREWORKS, "FIREWORKS_API_KEY"),
                           ("hosted_vllm/deepseek-ai/DeepSeek-V3", VLLM, "VLLM_API_KEY")]),
    ]:
        for i, (model, base, key) in enumerate(models):
            out.append(_dep(group, model, base, key, dep_id=f"{group}-{i}", max_input_tokens=128000))
    return out


def tenant_deployments(n: int) -> list:
    """`n` more deployments for the large table: per-team fine-tunes and Azure deployments, 4 per group,
    spread over the same provider hosts plus 16 more Azure resources."""
    out = []
    for i in range(n):
        g, k = divmod(i, 4)
        if k == 3:
            out.append(_dep(f"team-{g:03d}-claude", "anthropic/claude-3-5-sonnet-20241022", ANTHROPIC,
                            "ANTHROPIC_API_KEY", dep_id=f"t{i:04d}"))
        elif g % 2 == 0:
            base = f"https://acme-tenant{g % 16:02d}.openai.azure.com"
            out.append(_dep(f"ft:gpt-4o-mini:acme:team-{g:03d}", f"azure/ft-team{g:03d}-{k}", base,
                            "AZURE_WESTEU_KEY", dep_id=f"t{i:04d}", api_version="2024-10-21"))
        else:
            out.append(_dep(f"ft:gpt-4o-mini:acme:team-{g:03d}", f"openai/ft:gpt-4o-mini:acme:team-{g:03d}:{k}",
                            OPENAI, "OPENAI_API_KEY_BATCH", dep_id=f"t{i:04d}"))
    return out


def router_config(deployments: int = 40, *, rewrite: bool = True, failover_settings: bool = True) -> dict:
    """The plugin config. `failover_settings`: num_retries + fallbacks (so each routed request carries a
    signed attempt state, as with any config that can fail over)."""
    model_list = hot_group(rewrite) + other_groups()
    if deployments < len(model_list):
        raise ValueError(f"at least {len(model_list)} deployments")
    model_list += tenant_deployments(deployments - len(model_list))
    router = {
        "routing_strategy": "simple-shuffle",
        "allowed_fails": 3,
        "cooldown_time": 30,
        "timeout": 120,
        "model_group_alias": {"gpt4": "gpt-4o", "claude": "claude-3-5-sonnet", "llama": "llama-3.1-70b"},
    }
    if failover_settings:
        router["num_retries"] = 2
        router["fallbacks"] = [{"gpt-4o": ["gpt-4o-mini", "claude-3-5-sonnet"]},
                               {"claude-3-5-sonnet": ["gpt-4o"]}]
        router["context_window_fallbacks"] = [{"gpt-4o-mini": ["gpt-4.1"]}]
    return {
        "model_list": model_list,
        "router_settings": router,
        "litellm_settings": {"drop_params": True},
        "general_settings": {"master_key": "os.environ/LLM_GATEWAY_KEY"},
        "envoy_settings": {"cluster_header": "x-llm-router-cluster", "max_cooldown_time": 300,
                           "max_request_body_bytes": 1048576},
    }


def with_virtual_keys(config: dict) -> dict:
    """Variant 3k: `KEYS` virtual keys (LiteLLM's stored sha256 hashes) in `TEAMS` teams, each with its own
    rpm / tpm / parallel limits and a daily budget, so the request path identifies the caller, checks model
    access, admits against four limits in shared data and settles three (tokens and cost from nginx's usage).
    The limits are far above what the run sends: nothing is refused."""
    import hashlib

    def token(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    config["teams"] = [{"team_id": f"dept-{t}", "models": [HOT_GROUP, "gpt-4o-mini", "claude"]} for t in range(TEAMS)]
    limits = {"rpm_limit": 10**9, "tpm_limit": 4 * 10**9, "max_parallel_requests": 100000, "max_budget": 10**6,
              "budget_duration": "1d"}
    config["keys"] = [{"token": token(BENCH_KEY if i == KEYS // 2 else f"sk-bench-dept-{i:04d}"),
                       "key_alias": f"dept-{i:04d}", "team_id": f"dept-{i % TEAMS}", **limits} for i in range(KEYS)]
    return config


def cluster_names(config: dict) -> list:
    """The Envoy clusters a config routes to (Istio names derived from each api_base, as the filter does)."""
    names = []
    for entry in config["model_list"]:
        base = entry["litellm_params"]["api_base"]
        scheme, rest = base.split("://", 1)
        hostport = rest.split("/", 1)[0]
        host, _, port = hostport.partition(":")
        port = port or ("443" if scheme == "https" else "80")
        name = f"outbound|{port}||{host.lower()}"
        if name not in names:
            names.append(name)
    return names


if __name__ == "__main__":  # a quick look: python3 bench/workload.py
    for n in (40, 500):
        c = router_config(n)
        groups = {d["model_name"] for d in c["model_list"]}
        print(n, "deployments,", len(groups), "groups,", len(cluster_names(c)), "clusters,",
              len(json.dumps(c)), "bytes of config")
    for s in (300, 30 * 1024):
        print(len(chat_body(s)), chat_body(s)[:120])
