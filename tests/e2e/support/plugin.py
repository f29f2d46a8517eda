"""Builders for llm_router plugin configs (the LiteLLM `model_list` / `router_settings` shape)."""

from __future__ import annotations

from typing import Optional


def deployment(model_name: str, model: str, api_base: Optional[str] = None, *, id: Optional[str] = None,
               api_key: Optional[str] = None, params_key: str = "litellm_params",
               model_info: Optional[dict] = None, **params) -> dict:
    """One model_list entry. Extra keyword arguments go into litellm_params (weight, rpm, api_version, ...)."""
    p: dict = {"model": model}
    if api_base is not None:
        p["api_base"] = api_base
    if api_key is not None:
        p["api_key"] = api_key
    p.update(params)
    entry: dict = {"model_name": model_name, params_key: p}
    info = dict(model_info or {})
    if id is not None:
        info["id"] = id
    if info:
        entry["model_info"] = info
    return entry


def plugin_config(model_list: list, *, routing_strategy: str = "simple-shuffle", allowed_fails: int = 3,
                  cooldown_time: float = 30, aliases: Optional[dict] = None, master_key: Optional[str] = None,
                  envoy_settings: Optional[dict] = None, **router_settings) -> dict:
    rs = {"routing_strategy": routing_strategy, "allowed_fails": allowed_fails, "cooldown_time": cooldown_time}
    if aliases:
        rs["model_group_alias"] = aliases
    rs.update(router_settings)
    cfg = {"model_list": model_list, "router_settings": rs, "litellm_settings": {}, "general_settings": {}}
    if master_key is not None:
        cfg["general_settings"]["master_key"] = master_key
    es = {"cluster_header": "x-llm-router-cluster", "max_cooldown_time": 300, "max_request_body_bytes": 1048576}
    es.update(envoy_settings or {})
    cfg["envoy_settings"] = es
    return cfg


def chat(model: str, content: str = "Hello!", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}
