//! `GET /v1/models` (and `/models`): the model list, answered by the filter itself from the
//! routing table, in OpenAI's list shape so SDKs' `client.models.list()` works against the
//! gateway.
//!
//! What is listed: every model group (a `model_name` with deployments) in config order, then
//! every `model_group_alias` entry that is not `hidden` (LiteLLM leaves hidden aliases out), in
//! name order (the config's JSON object does not keep its key order). Stable across reloads.
//! Wildcard groups are listed under their pattern (`openai/*`), as LiteLLM lists them: the
//! router cannot know which concrete names the provider serves, and the pattern tells the
//! caller what it may ask for. The body only changes with the config, so it is built once per
//! `on_configure` and kept in [`crate::config::RouterConfig`]; a request only copies it out.

use super::json_out::{array, Obj};
use crate::config::{Alias, Table};

/// LiteLLM's fixed `created` for proxy models (the gateway has no creation date to report).
pub const CREATED: u64 = 1_677_610_602;

/// The `{"object":"list","data":[...]}` body.
pub fn models_body(table: &Table, aliases: &[Alias]) -> Vec<u8> {
    models_body_where(table, aliases, &[], &|_, _| true)
}

/// The list restricted to one caller (`access::Policy`, once per key at configure time): the
/// groups and visible aliases `keep(name, group)` accepts, then `extra` (a key's own names, with
/// the group each stands for) not listed already.
pub fn models_body_where(table: &Table, aliases: &[Alias], extra: &[(&str, usize)], keep: &dyn Fn(&str, usize) -> bool) -> Vec<u8> {
    let mut ids: Vec<(&str, &str)> = Vec::with_capacity(table.groups.len() + aliases.len() + extra.len());
    let owner = |group: usize| {
        table
            .groups
            .get(group)
            .and_then(|g| g.members.first())
            .and_then(|&i| table.deployments.get(i))
            .map_or("llm-router", |d| d.provider.name)
    };
    for (i, g) in table.groups.iter().enumerate().filter(|(i, g)| keep(&g.name, *i)) {
        ids.push((g.name.as_str(), owner(i)));
    }
    for a in aliases.iter().filter(|a| !a.hidden) {
        if table.group_index(&a.alias).is_some() {
            continue; // an alias shadowed by a model_name: that name is the group's
        }
        if let Some(g) = table.group_index(&a.group).filter(|&g| keep(&a.alias, g)) {
            ids.push((a.alias.as_str(), owner(g)));
        }
    }
    for &(name, g) in extra {
        if !ids.iter().any(|(id, _)| *id == name) {
            ids.push((name, owner(g)));
        }
    }
    let data: Vec<Vec<u8>> = ids
        .iter()
        .map(|(id, owned_by)| {
            let mut m = Vec::with_capacity(80 + id.len());
            let mut o = Obj::begin(&mut m);
            o.str("id", id).str("object", "model").num("created", CREATED).str("owned_by", owned_by);
            o.end();
            m
        })
        .collect();
    let mut out = Vec::new();
    let mut list = Obj::begin(&mut out);
    list.str("object", "list").raw("data", &array(&data));
    list.end();
    out
}

#[cfg(test)]
mod tests {
    use crate::config;
    use serde_json::{json, Value};

    #[test]
    fn lists_groups_then_visible_aliases_in_config_order() {
        let cfg = json!({
            "model_list": [
                {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": "sk-secret-1"}},
                {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3", "api_key": "sk-secret-2"}},
                {"model_name": "gpt-4o", "litellm_params": {"model": "azure/gpt-4o", "api_base": "https://r.openai.azure.com", "api_key": "k"}},
                {"model_name": "openai/*", "litellm_params": {"model": "openai/*", "api_key": "sk-secret-3"}},
            ],
            "router_settings": {"model_group_alias": {
                "gpt4": "gpt-4o", "old": {"model": "claude", "hidden": true}, "claude-latest": {"model": "claude"}}},
        });
        let loaded = config::load(cfg.to_string().as_bytes(), &|_| None);
        let Some(c) = loaded.config else { panic!("{:?}", loaded.diagnostics.errors) };
        let text = String::from_utf8(c.models_body.clone()).unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(body["object"], "list");
        let ids: Vec<&str> = body["data"].as_array().map(|d| d.iter().filter_map(|m| m["id"].as_str()).collect()).unwrap_or_default();
        assert_eq!(ids, ["gpt-4o", "claude", "openai/*", "claude-latest", "gpt4"]);
        assert_eq!(body["data"][0], json!({"id": "gpt-4o", "object": "model", "created": 1_677_610_602, "owned_by": "openai"}));
        assert_eq!(body["data"][3]["owned_by"], "anthropic");
        assert!(!text.contains("sk-secret"), "{text}");
    }

    #[test]
    fn empty_table_is_an_empty_list() {
        let c = config::load(b"{}", &|_| None).config;
        assert_eq!(c.map(|c| c.models_body), Some(br#"{"object":"list","data":[]}"#.to_vec()));
    }
}
