//! Command line: argument parsing and the commands. Every command writes to the given streams
//! and returns the exit status (0 ok, 1 the config has errors or a file cannot be read, 2 usage
//! errors; `check --strict` adds 3, see [`crate::check`]).

use crate::check;
use crate::env::Env;
use crate::envoy::{self, Addr};
use crate::istio;
use crate::plan::{self, EnvMode, Validated};
use crate::source::{self, Diag, Files, Severity, Source};
use crate::value::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

const USAGE: &str = "\
llm-router: operator tool for the llm-router Envoy filter

Usage:
  llm-router check CONFIG [--env-file FILE] [--allow-missing-env] [--format text|json] [--strict]
                          [--print-json]
  llm-router envoy CONFIG [-o FILE] [--format yaml|json] [--wasm PATH] [--listen ADDR:PORT]
                          [--admin ADDR:PORT] [--redirector ADDR:PORT] [--failover | --no-failover]
                          [--ca-file PATH] [--idle-timeout SECONDS] [--access-log text|json]
                          [--rls-address HOST:PORT] [--env-file FILE]
  llm-router istio CONFIG --url URL [--sha256 HEX] [-o FILE] [--format yaml|json] [--namespace NS]
                          [--selector KEY=VALUE]... [--port N] [--name NAME] [--failure-policy P]
                          [--secret NAME] [--deployment NAME] [--gateway-patch FILE]
                          [--istio-version X.Y] [--env-file FILE]
  llm-router rls CONFIG --format limitador|envoy-ratelimit [-o FILE] [--env-file FILE]
                        [--allow-missing-env]
  llm-router package [--wasm PATH] [-o DIR] [--tag TAG]
  llm-router key new [--alias A] [--team T] [--models M1,M2] [--rpm N] [--tpm N] [--max-parallel N]
                     [--max-budget USD] [--budget-duration D] [--expires TIME] [--format yaml|json]
  llm-router key import [FILE|-] [--teams FILE|-] [--users FILE|-] [--format yaml|json]
  llm-router spend ACCESS_LOG... [--by key|team|model|day|user|tag[,...]] [--format table|csv|json]
                          [--since DATE] [--until DATE]

CONFIG is a LiteLLM or DeltaLLM proxy config (YAML, or JSON when it ends in .json), read the way
LiteLLM reads it: YAML 1.1 scalars, anchors and `<<:` merge keys, `include:` of further files.

check   Validates CONFIG with the filter's own loader and prints every problem with its field
        path and file position, then what will serve: the model groups with their deployments
        and providers, deployments per provider, the model_list entries skipped (and why), the
        settings accepted without effect; then `ok: N deployments in M model groups, ...`.
        `os.environ/NAME` values come from the environment (and --env-file, which wins);
        --allow-missing-env treats unset ones as set. --format json writes the same as one JSON
        document on stdout (ok, errors, warnings with their kind, summary; null when refused).
        --print-json writes the JSON the filter takes to stdout (the report then goes to
        stderr; not with --format json). Exit status: 0 the filter accepts CONFIG (warnings
        allowed), 1 it refuses it (errors) or CONFIG or --env-file cannot be read, 2 usage
        error, 3 with --strict: it loads but has warnings.
envoy   Writes a complete Envoy bootstrap: the filter with CONFIG embedded, one cluster per
        upstream (TLS with SNI for https api_bases), routes, admin, buffer limits, and the
        in-request failover wiring (redirector listener, upstream filter). Defaults:
        --listen 127.0.0.1:10000 --admin 127.0.0.1:9901 --redirector 127.0.0.1:10001
        --wasm target/wasm32-wasip1/release/llm_router.wasm
        --ca-file /etc/ssl/certs/ca-certificates.crt --idle-timeout 600 (or the config's
        longest timeout; routes have no total timeout, so streams are never cut; the old
        name --route-timeout is still accepted). --access-log json: the stdout access log as one
        JSON object per line with the spend fields (key alias, team, user, tags, cost; what
        `spend` reads) instead of the text line. Secrets stay `os.environ/NAME` references: Envoy's environment must
        provide them (they are listed in vm_config.environment_variables.host_env_keys).
        With envoy_settings.rate_limit_service, also the cluster it names (HTTP/2, gRPC) with
        the endpoint --rls-address (default 127.0.0.1:8081).
istio   Writes the objects for an Istio gateway (ingress or egress; Istio >= 1.28): an EnvoyFilter
        carrying the filter (ECDS, with allow_on_headers_stop_iteration) and the gateway's buffer
        and timeout settings, a Gateway listing the provider hosts, one VirtualService per host
        (routed only when the filter names that host's cluster), a ServiceEntry + DestinationRule
        (TLS with SNI and SAN check) per host outside the cluster, all exportTo `.`. Secrets stay
        os.environ/ references: --gateway-patch FILE writes the Deployment patch that sets them
        from the Secret (--secret); a literal secret in CONFIG is refused. --url is where
        istio-agent fetches llm_router.wasm: oci://IMAGE:TAG with --sha256 <manifest digest>,
        oci://IMAGE@sha256:..., https://.../llm_router.wasm with --sha256 <file sha256>, or
        file:///path in the proxy container. --istio-version below 1.28 is refused. Defaults:
        --namespace istio-system --selector istio=ingressgateway --port 80 --name llm-router
        --failure-policy closed (or open, reload) --secret <name>-keys
        --deployment istio-ingressgateway --istio-version 1.28
rls     Writes the rate limit service's limits for the global mode (envoy_settings.
        rate_limit_service): every rpm, tpm, parallel and budget limit of every key, team, user
        and key-per-model, once each, sorted, in the descriptors the filter sends (keys by their
        SHA-256, budgets in micro-USD). --format limitador: Limitador's limits file (first-hit
        windows in seconds); --format envoy-ratelimit: envoyproxy/ratelimit's config (fixed
        units: a budget_duration that is not one unit, or a limit above 4294967295, is refused).
package Writes the built filter as an OCI image in the Wasm image format istio-agent pulls for an
        oci:// url (an OCI image layout directory: -o DIR, default target/oci), and prints the
        module's sha256 and the image's manifest digest: WasmPlugin `sha256` for an oci:// url
        is the manifest digest (without `sha256:`). Deterministic: same module, same digests.
        Push it with any OCI client: skopeo copy oci:DIR:TAG docker://REGISTRY/llm-router:TAG.
        Defaults: --wasm target/wasm32-wasip1/release/llm_router.wasm --tag 0.1.0
key new Makes a virtual key: `sk-` + 32 url-safe characters from the OS's CSPRNG. The raw key is
        printed once, on stderr (`key: sk-...`), and nowhere else; stdout gets the `keys:` entry
        with its SHA-256 as `token` (what LiteLLM stores), so `key new ... > keys/app.yaml` keeps
        the key out of the file. Add the entry under the config's `keys:` or list the file in
        `include:`. --team names a team_id the config's `teams` must define; --models is a
        comma-separated list; --rpm/--tpm/--max-parallel set rpm_limit, tpm_limit,
        max_parallel_requests; --max-budget (USD) resets every --budget-duration (30d, 1mo,
        ...); --expires is ISO 8601 (UTC without an offset).
key import
        Turns LiteLLM's key export into `keys:` entries: FILE is the JSON of
        GET /key/list?return_full_object=true ({\"keys\": [...]}), a list of keys, or GET /key/info
        ({\"key\": ..., \"info\": {...}}); --teams FILE adds `teams:` from GET /team/list (a list),
        /v2/team/list ({\"teams\": [...]}) or /team/info; --users FILE adds `users:` (budgets)
        from GET /user/list ({\"users\": [...]}). `token` stays LiteLLM's SHA-256 hash;
        model_rpm_limit, model_tpm_limit and tags come out of metadata; a key's
        litellm_budget_table fills the limits it leaves unset. Fields llm-router has no use for
        (spend, created_at, permissions, ...) are dropped, named on one stderr line. An entry
        that is wrong (a raw sk- key as token, a bad value) is refused with its field path and
        left out; the key is never printed. Exit status 1 when any entry was refused.
spend   Sums requests, prompt/completion tokens and cost (exact decimals) from Envoy access logs: the
        JSON lines of `envoy --access-log json` (or the default text lines: tokens, no key or cost),
        `-` for stdin; other lines are skipped and counted on stderr. --by key, team, model, day,
        user, tag (combinable: --by team,day; a request with two tags counts under both);
        --since/--until YYYY-MM-DD (UTC days, both included) or an RFC 3339 UTC time.

envoy, istio, rls: output goes to stdout unless -o FILE is given; envoy, istio: --format defaults
to yaml (json when FILE ends in .json). Problems and notes go to stderr. check: --format defaults to text.
key: --format defaults to yaml; the entries go to stdout, the raw key and notes to stderr.
";

/// Runs the tool with `args` (without the program name).
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match try_run(args, out, err) {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            let _ = writeln!(err, "llm-router: {msg}\n\n{USAGE}");
            2
        }
        Err(Failure::Io(msg)) => {
            let _ = writeln!(err, "llm-router: {msg}");
            1
        }
    }
}

enum Failure {
    Usage(String),
    Io(String),
}

fn io(e: std::io::Error) -> Failure {
    Failure::Io(e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Yaml,
    Json,
}

/// Parsed options: flags with values, switches, and the one positional CONFIG.
struct Opts {
    config: PathBuf,
    values: Vec<(String, String)>,
    switches: Vec<String>,
}

impl Opts {
    fn parse(args: &[String], with_value: &[&str], switches: &[&str]) -> Result<Opts, Failure> {
        let mut config = None;
        let mut values = Vec::new();
        let mut found = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if arg == "-o" || arg.starts_with("--") {
                let (name, inline) = match arg.split_once('=') {
                    Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                    _ => (arg.clone(), None),
                };
                if with_value.contains(&name.as_str()) {
                    let v = match inline {
                        Some(v) => v,
                        None => it.next().cloned().ok_or_else(|| Failure::Usage(format!("{name} needs a value")))?,
                    };
                    values.push((name, v));
                } else if switches.contains(&name.as_str()) && inline.is_none() {
                    found.push(name);
                } else {
                    return Err(Failure::Usage(format!("unknown option `{arg}`")));
                }
            } else if config.is_none() {
                config = Some(PathBuf::from(arg));
            } else {
                return Err(Failure::Usage(format!("unexpected argument `{arg}` (one CONFIG only)")));
            }
        }
        let config = config.ok_or_else(|| Failure::Usage("missing CONFIG".into()))?;
        Ok(Opts { config, values, switches: found })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.values.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }

    fn has(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    fn env(&self) -> Result<Env, Failure> {
        match self.get("--env-file") {
            Some(path) => Env::process().with_file(Path::new(path)).map_err(Failure::Io),
            None => Ok(Env::process()),
        }
    }

    fn format(&self) -> Result<Format, Failure> {
        match self.get("--format") {
            Some("yaml") => Ok(Format::Yaml),
            Some("json") => Ok(Format::Json),
            Some(other) => Err(Failure::Usage(format!("--format must be yaml or json, not `{other}`"))),
            None if self.get("-o").is_some_and(|o| o.ends_with(".json")) => Ok(Format::Json),
            None => Ok(Format::Yaml),
        }
    }
}

fn try_run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, Failure> {
    let Some((command, rest)) = args.split_first() else {
        return Err(Failure::Usage("missing command".into()));
    };
    match command.as_str() {
        "check" => check(&Opts::parse(rest, &["--env-file", "--format"], &["--allow-missing-env", "--print-json", "--strict"])?, out, err),
        "envoy" => envoy(
            &Opts::parse(
                rest,
                &["-o", "--format", "--wasm", "--listen", "--admin", "--redirector", "--ca-file", "--idle-timeout", "--route-timeout", "--env-file", "--access-log", "--rls-address"],
                &["--failover", "--no-failover"],
            )?,
            out,
            err,
        ),
        "istio" => istio(
            &Opts::parse(
                rest,
                &[
                    "-o",
                    "--format",
                    "--name",
                    "--namespace",
                    "--url",
                    "--sha256",
                    "--selector",
                    "--port",
                    "--failure-policy",
                    "--secret",
                    "--deployment",
                    "--gateway-patch",
                    "--istio-version",
                    "--target-ref",
                    "--env-file",
                ],
                &[],
            )?,
            out,
            err,
        ),
        "rls" => rls(&Opts::parse(rest, &["-o", "--format", "--env-file"], &["--allow-missing-env"])?, out, err),
        "package" => crate::package::run(rest, out, err).map_err(|e| match e {
            crate::package::Error::Usage(m) => Failure::Usage(m),
            crate::package::Error::Failed(m) => Failure::Io(m),
        }),
        "key" => crate::key::run(rest, out, err).map_err(|e| match e {
            crate::key::Error::Usage(m) => Failure::Usage(m),
            crate::key::Error::Failed(m) => Failure::Io(m),
        }),
        "spend" => Ok(crate::spend::run(rest, &mut std::io::stdin().lock(), out, err)),
        "-h" | "--help" | "help" => {
            write!(out, "{USAGE}").map_err(io)?;
            Ok(0)
        }
        "-V" | "--version" => {
            writeln!(out, "llm-router {}", env!("CARGO_PKG_VERSION")).map_err(io)?;
            Ok(0)
        }
        other => Err(Failure::Usage(format!("unknown command `{other}`"))),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn print_diags(files: &Files, diags: &[Diag], w: &mut dyn Write) -> Result<(), Failure> {
    for d in diags {
        writeln!(w, "{}", files.render(d)).map_err(io)?;
    }
    Ok(())
}

fn count(diags: &[Diag], severity: Severity) -> usize {
    diags.iter().filter(|d| d.severity == severity).count()
}

fn check(opts: &Opts, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, Failure> {
    let format = match opts.get("--format") {
        None | Some("text") => check::Format::Text,
        Some("json") => check::Format::Json,
        Some(other) => return Err(Failure::Usage(format!("check --format must be text or json, not `{other}`"))),
    };
    let print_json = opts.has("--print-json");
    if print_json && format == check::Format::Json {
        return Err(Failure::Usage(
            "--print-json and --format json both write to stdout: --format json is the report, --print-json the filter's JSON; run check once for each".into(),
        ));
    }
    let o = check::Options {
        config: opts.config.clone(),
        env: opts.env()?,
        allow_missing_env: opts.has("--allow-missing-env"),
        print_json,
        format,
        strict: opts.has("--strict"),
    };
    check::run(&o, out, err).map_err(io)
}

/// Reads and validates CONFIG for generation. On failure the problems have been printed.
/// Reads and validates the config; `failover` (for `envoy`) declares whether the output carries
/// the failover wiring (see [`Source::declare_failover`]).
fn prepare(opts: &Opts, env: &Env, failover: Option<bool>, mode: EnvMode, err: &mut dyn Write) -> Result<Option<(Source, Validated, Vec<plan::Endpoint>)>, Failure> {
    let (mut source, mut diags) = source::read(&opts.config);
    if let (Some(s), Some(on)) = (source.as_mut(), failover) {
        s.declare_failover(on);
    }
    let files = source.as_ref().map(|s| s.files.clone()).unwrap_or_else(|| Files { names: vec![opts.config.display().to_string()] });
    let Some(source) = source else {
        print_diags(&files, &diags, err)?;
        return Ok(None);
    };
    let validated = plan::validate(&source, env, mode);
    diags.extend(validated.diags.iter().cloned());
    let endpoints = match &validated.config {
        Some(cfg) if count(&diags, Severity::Error) == 0 => match plan::endpoints(cfg, &source) {
            Ok(e) => Some(e),
            Err(more) => {
                diags.extend(more);
                None
            }
        },
        _ => None,
    };
    plan::sort(&mut diags);
    print_diags(&files, &diags, err)?;
    match endpoints {
        Some(e) if count(&diags, Severity::Error) == 0 => Ok(Some((source, validated, e))),
        _ => {
            writeln!(err, "{}: not generating: {}", files.at(None), plural(count(&diags, Severity::Error), "error", "errors")).map_err(io)?;
            Ok(None)
        }
    }
}

fn emit(opts: &Opts, text: &str, out: &mut dyn Write) -> Result<(), Failure> {
    match opts.get("-o") {
        Some(path) if path != "-" => std::fs::write(path, text).map_err(|e| Failure::Io(format!("{path}: {e}"))),
        _ => out.write_all(text.as_bytes()).map_err(io),
    }
}

fn addr(opts: &Opts, name: &str, default: &str) -> Result<Addr, Failure> {
    Addr::parse(opts.get(name).unwrap_or(default)).map_err(|e| Failure::Usage(format!("{name}: {e}")))
}

fn envoy(opts: &Opts, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, Failure> {
    let format = opts.format()?;
    let env = opts.env()?;
    let eo = envoy::Options {
        wasm: opts.get("--wasm").unwrap_or(envoy::DEFAULT_WASM).to_string(),
        listen: addr(opts, "--listen", "127.0.0.1:10000")?,
        admin: addr(opts, "--admin", "127.0.0.1:9901")?,
        redirector: addr(opts, "--redirector", "127.0.0.1:10001")?,
        // The last of --failover / --no-failover wins; on by default.
        failover: opts.switches.iter().rev().find(|s| s.ends_with("failover")).is_none_or(|s| s != "--no-failover"),
        ca_file: opts.get("--ca-file").unwrap_or(envoy::DEFAULT_CA_FILE).to_string(),
        // --route-timeout: the old name, from when routes had a total timeout. The last one wins.
        idle_timeout_secs: match opts.values.iter().rev().find(|(n, _)| n == "--idle-timeout" || n == "--route-timeout") {
            None => None,
            Some((name, t)) => Some(t.parse::<u64>().map_err(|_| Failure::Usage(format!("{name}: `{t}` is not a number of seconds")))?),
        },
        access_log: match opts.get("--access-log") {
            None | Some("text") => envoy::AccessLog::Text,
            Some("json") => envoy::AccessLog::Json,
            Some(other) => return Err(Failure::Usage(format!("--access-log must be text or json, not `{other}`"))),
        },
        rls_address: addr(opts, "--rls-address", envoy::DEFAULT_RLS_ADDRESS)?,
    };
    let mut used = vec![&eo.listen, &eo.admin];
    if eo.failover {
        used.push(&eo.redirector);
    }
    for (i, a) in used.iter().enumerate() {
        if a.port != 0 && used.iter().skip(i + 1).any(|b| b.port == a.port && b.host == a.host) {
            return Err(Failure::Usage(format!("{} is used twice (listener, admin and redirector need distinct addresses)", a.show())));
        }
    }
    let Some((source, validated, endpoints)) = prepare(opts, &env, Some(eo.failover), EnvMode::Placeholders, err)? else { return Ok(1) };
    let Some(cfg) = validated.config.as_ref() else { return Ok(1) };
    if let Some(r) = &cfg.envoy.rate_limit_service {
        if let Some(ep) = endpoints.iter().find(|e| e.cluster == r.cluster) {
            writeln!(
                err,
                "{}: error: envoy_settings.rate_limit_service.cluster: `{}` is also the cluster of deployments {}; give the rate limit service its own cluster name",
                source.files.at(None),
                r.cluster,
                ep.deployments.join(", ")
            )
            .map_err(io)?;
            return Ok(1);
        }
    }
    let bootstrap = envoy::bootstrap(&source, cfg, &endpoints, &validated.env_refs, &eo);
    let text = match format {
        Format::Json => format!("{}\n", bootstrap.to_json_pretty()),
        Format::Yaml => format!("{}{}", envoy_header(&source, &eo, &endpoints, &env_sentence(&validated), cfg), bootstrap.to_yaml()),
    };
    emit(opts, &text, out)?;
    if cfg.envoy.rate_limit_service.is_none() && opts.get("--rls-address").is_some() {
        writeln!(err, "{}: note: --rls-address has no effect: the config has no envoy_settings.rate_limit_service", source.files.at(None)).map_err(io)?;
    }
    if endpoints.iter().any(|e| e.tls) && !Path::new(&eo.ca_file).exists() {
        writeln!(err, "{}: note: {} does not exist here; Envoy needs a CA bundle there to verify https upstreams (--ca-file)", source.files.at(None), eo.ca_file)
            .map_err(io)?;
    }
    writeln!(
        err,
        "{}: Envoy bootstrap with {} ({}){}",
        source.files.at(None),
        plural(endpoints.len(), "upstream cluster", "upstream clusters"),
        if eo.failover { "failover on" } else { "failover off" },
        if validated.env_refs.is_empty() { String::new() } else { format!("; {}", env_sentence(&validated)) }
    )
    .map_err(io)?;
    if !cfg.envoy.access_log_properties {
        writeln!(
            err,
            "{}: note: the access log prints the router's deployment, group, attempts and tokens only with envoy_settings.access_log_properties: true",
            source.files.at(None)
        )
        .map_err(io)?;
    } else if eo.access_log == envoy::AccessLog::Json && !cfg.envoy.access_log_tokens {
        writeln!(
            err,
            "{}: note: the JSON access log carries token counts and cost only with envoy_settings.access_log_tokens: true",
            source.files.at(None)
        )
        .map_err(io)?;
    }
    Ok(0)
}

fn rls(opts: &Opts, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, Failure> {
    let format = match opts.get("--format") {
        Some("limitador") => crate::rls::Format::Limitador,
        Some("envoy-ratelimit") => crate::rls::Format::EnvoyRatelimit,
        Some(other) => return Err(Failure::Usage(format!("rls --format must be limitador or envoy-ratelimit, not `{other}`"))),
        None => return Err(Failure::Usage("rls needs --format limitador or --format envoy-ratelimit".into())),
    };
    let env = opts.env()?;
    let mode = if opts.has("--allow-missing-env") { EnvMode::Placeholders } else { EnvMode::Strict };
    let Some((source, validated, _)) = prepare(opts, &env, None, mode, err)? else { return Ok(1) };
    let Some(cfg) = validated.config.as_ref() else { return Ok(1) };
    let at = source.files.at(None);
    let domain = match &cfg.envoy.rate_limit_service {
        Some(r) => r.domain.clone(),
        None => {
            writeln!(
                err,
                "{at}: note: the config has no envoy_settings.rate_limit_service: the filter will not call a rate limit service \
                 (writing the limits for the default domain {})",
                llm_router::config::rate_limit_service::DEFAULT_DOMAIN
            )
            .map_err(io)?;
            llm_router::config::rate_limit_service::DEFAULT_DOMAIN.to_string()
        }
    };
    let entries = crate::rls::entries(cfg);
    let text = match format {
        crate::rls::Format::Limitador => {
            format!("{}{}", crate::rls::limitador_header(&source.files.to_string(), &domain), crate::rls::limitador(&domain, &entries).to_yaml())
        }
        crate::rls::Format::EnvoyRatelimit => match crate::rls::envoy_ratelimit(&domain, &entries) {
            Ok(v) => format!("{}{}", crate::rls::envoy_ratelimit_header(&source.files.to_string()), v.to_yaml()),
            Err(errors) => {
                for e in &errors {
                    writeln!(err, "{at}: error: {e}").map_err(io)?;
                }
                writeln!(err, "{at}: not generating: {}", plural(errors.len(), "error", "errors")).map_err(io)?;
                return Ok(1);
            }
        },
    };
    emit(opts, &text, out)?;
    let forever = crate::rls::forever_budgets(&entries);
    if format == crate::rls::Format::EnvoyRatelimit && forever > 0 {
        writeln!(
            err,
            "{at}: warning: {} without budget_duration: envoyproxy/ratelimit has no unit that never resets, so they count per year (reset every 365 days from the epoch)",
            plural(forever, "budget", "budgets")
        )
        .map_err(io)?;
    }
    writeln!(err, "{at}: {} for domain {domain}", plural(entries.len(), "limit", "limits")).map_err(io)?;
    Ok(0)
}

/// What Envoy's environment must (references) and should (provider keys of deployments without
/// `api_key`, which go without a key when unset) provide; empty when it needs nothing.
fn env_sentence(v: &Validated) -> String {
    if v.env_refs.is_empty() {
        return String::new();
    }
    let (optional, required): (Vec<&String>, Vec<&String>) = v.env_refs.iter().partition(|n| v.optional_env_refs.contains(n));
    let join = |names: &[&String]| names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
    let should = format!("should set {} (the provider key of deployments without api_key: unset, they go without a key)", join(&optional));
    match (required.is_empty(), optional.is_empty()) {
        (_, true) => format!("Envoy's environment must set {}", join(&required)),
        (true, false) => format!("Envoy's environment {should}"),
        (false, false) => format!("Envoy's environment must set {} and {should}", join(&required)),
    }
}

fn envoy_header(source: &Source, eo: &envoy::Options, endpoints: &[plan::Endpoint], env: &str, cfg: &llm_router::config::RouterConfig) -> String {
    let mut h = format!(
        "# Envoy bootstrap for llm-router, generated by `llm-router envoy` from {}.\n\
         # Regenerate it when the config changes rather than editing it.\n#\n\
         #   run:       envoy -c <this file>\n\
         #   listener:  {} (OpenAI-style API, e.g. POST /v1/chat/completions)\n\
         #   admin:     {}\n",
        source.files,
        eo.listen.show(),
        eo.admin.show()
    );
    if eo.failover {
        h.push_str(&format!("#   failover:  redirector listener on {} (--no-failover turns in-request failover off)\n", eo.redirector.show()));
    }
    h.push_str(&format!("#   wasm:      {} (relative paths are relative to Envoy's working directory)\n", eo.wasm));
    h.push_str(&format!(
        "#   buffers:   {} bytes per request body (envoy_settings.max_request_body_bytes + room for the router's rewrite)\n\
         #   timeouts:  no route timeout (streams are never cut); idle timeout {}s\n",
        envoy::buffer_limit(cfg),
        envoy::idle_timeout_secs(cfg, eo)
    ));
    if !env.is_empty() {
        h.push_str(&format!("#   env:       {env} (passed to the filter by name)\n"));
    }
    for ep in endpoints {
        h.push_str(&format!("#   cluster:   {} -> {}\n", ep.cluster, ep.url()));
    }
    if let Some(r) = &cfg.envoy.rate_limit_service {
        h.push_str(&format!(
            "#   rls:       {} -> {} (gRPC over HTTP/2, --rls-address; domain {}, its limits: `llm-router rls`)\n",
            r.cluster,
            eo.rls_address.show(),
            r.domain
        ));
    }
    h.push('\n');
    h
}

fn istio_options(opts: &Opts) -> Result<istio::Options, Failure> {
    if opts.get("--target-ref").is_some() {
        return Err(Failure::Usage(
            "--target-ref: the objects are for an Istio gateway Deployment selected by its labels (Gateway API gateways route with \
             HTTPRoutes, which this output does not write); use --selector KEY=VALUE"
                .into(),
        ));
    }
    if let Some(v) = opts.get("--istio-version") {
        let Some(version) = istio::parse_version(v) else {
            return Err(Failure::Usage(format!("--istio-version: expected MAJOR.MINOR (e.g. 1.28), got `{v}`")));
        };
        if version < istio::MIN_ISTIO {
            return Err(Failure::Usage(format!(
                "--istio-version {v}: not supported. The filter needs `allow_on_headers_stop_iteration: true` on its Wasm config \
                 (without it every routed request hangs); a WasmPlugin cannot set it, and istiod before {}.{} drops it from an \
                 EnvoyFilter (its go-control-plane predates the field; a warning only). Use Istio >= {}.{} (proxy Envoy >= 1.35).",
                istio::MIN_ISTIO.0,
                istio::MIN_ISTIO.1,
                istio::MIN_ISTIO.0,
                istio::MIN_ISTIO.1
            )));
        }
    }
    let istio_version = opts.get("--istio-version").and_then(istio::parse_version).unwrap_or(istio::MIN_ISTIO);
    let mut selector = Vec::new();
    for s in opts.all("--selector") {
        let (k, v) = s.split_once('=').ok_or_else(|| Failure::Usage(format!("--selector: expected KEY=VALUE, got `{s}`")))?;
        if k.is_empty() {
            return Err(Failure::Usage(format!("--selector: empty label name in `{s}`")));
        }
        selector.push((k.to_string(), v.to_string()));
    }
    if selector.is_empty() {
        selector.push((istio::DEFAULT_SELECTOR.0.to_string(), istio::DEFAULT_SELECTOR.1.to_string()));
    }
    let Some(url) = opts.get("--url") else {
        return Err(Failure::Usage(
            "missing --url: where the gateway's istio-agent fetches llm_router.wasm (oci://IMAGE:TAG with --sha256 <manifest digest>, \
             oci://IMAGE@sha256:<digest>, https://HOST/llm_router.wasm with --sha256 <sha256 of the file>, or file:///path in the \
             proxy container)"
                .into(),
        ));
    };
    let module = istio::Module::parse(url, opts.get("--sha256")).map_err(Failure::Usage)?;
    let failure_policy = match opts.get("--failure-policy") {
        None => istio::FailurePolicy::Closed,
        Some(p) => istio::FailurePolicy::parse(p)
            .ok_or_else(|| Failure::Usage(format!("--failure-policy: expected closed, open or reload, got `{p}`")))?,
    };
    let port = match opts.get("--port") {
        None => istio::DEFAULT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| Failure::Usage(format!("--port: `{p}` is not a port")))?,
    };
    let dns1123 = |flag: &str, v: &str| -> Result<String, Failure> {
        let ok = !v.is_empty()
            && v.len() <= 63
            && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !v.starts_with('-')
            && !v.ends_with('-');
        if ok {
            Ok(v.to_string())
        } else {
            Err(Failure::Usage(format!("{flag}: `{v}` is not a Kubernetes name (lowercase letters, digits and `-`, at most 63)")))
        }
    };
    let name = dns1123("--name", opts.get("--name").unwrap_or("llm-router"))?;
    let namespace = dns1123("--namespace", opts.get("--namespace").unwrap_or(istio::DEFAULT_NAMESPACE))?;
    let secret = match opts.get("--secret") {
        Some(s) => dns1123("--secret", s)?,
        None => format!("{name}-keys"),
    };
    Ok(istio::Options {
        name,
        namespace,
        namespace_defaulted: opts.get("--namespace").is_none(),
        selector,
        port,
        module,
        failure_policy,
        secret,
        deployment: dns1123("--deployment", opts.get("--deployment").unwrap_or(istio::DEFAULT_DEPLOYMENT))?,
        istio_version,
    })
}

fn istio(opts: &Opts, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, Failure> {
    let format = opts.format()?;
    let env = opts.env()?;
    let io_opts = istio_options(opts)?;
    let Some((source, validated, endpoints)) = prepare(opts, &env, Some(false), EnvMode::Placeholders, err)? else { return Ok(1) };
    let Some(cfg) = validated.config.as_ref() else { return Ok(1) };
    // What Istio could not route, and secrets that would be written into the EnvoyFilter.
    let mut diags: Vec<Diag> = istio::errors(&endpoints).into_iter().map(|m| Diag::error(None, m)).collect();
    diags.extend(istio::literal_secrets(&source));
    let rls = match cfg.envoy.rate_limit_service.as_ref().map(|r| istio::rls_cluster(&r.cluster).map(|(p, h)| (r.cluster.clone(), p, h))) {
        Some(Err(e)) => {
            diags.push(Diag::error(None, e));
            None
        }
        Some(Ok(found)) => Some(found),
        None => None,
    };
    if !diags.is_empty() {
        plan::sort(&mut diags);
        print_diags(&source.files, &diags, err)?;
        writeln!(err, "{}: not generating: {}", source.files.at(None), plural(diags.len(), "error", "errors")).map_err(io)?;
        return Ok(1);
    }
    let upstream_refs = crate::env::upstream_references(&source.value);
    let vars: Vec<istio::EnvVar> = validated
        .env_refs
        .iter()
        .map(|n| match (upstream_refs.contains(n), env.get(n)) {
            (true, Some(v)) => istio::EnvVar::Plain(n.clone(), v),
            _ if validated.optional_env_refs.contains(n) => istio::EnvVar::OptionalSecret(n.clone()),
            _ => istio::EnvVar::Secret(n.clone()),
        })
        .collect();
    let objects = istio::objects(&source, cfg, &endpoints, &validated.env_refs, &io_opts);
    let text = match format {
        Format::Json => format!("{}\n", Value::map([("apiVersion", Value::from("v1")), ("kind", Value::from("List")), ("items", Value::Seq(objects))]).to_json_pretty()),
        Format::Yaml => {
            let mut t = istio_header(&source, &io_opts, &vars, &endpoints);
            if let Some((cluster, port, host)) = &rls {
                // Before the header's closing blank line.
                t.pop();
                t.push_str(&istio::rls_comment(cluster, *port, host));
                t.push('\n');
            }
            for (i, o) in objects.iter().enumerate() {
                if i > 0 {
                    t.push_str("---\n");
                }
                t.push_str(&o.to_yaml());
            }
            t
        }
    };
    emit(opts, &text, out)?;
    let at = source.files.at(None);
    if let Some(path) = opts.get("--gateway-patch") {
        let value = istio::deployment_patch(&vars, &io_opts);
        // JSON when FILE ends in .json (kubectl reads either).
        let patch = if path.ends_with(".json") {
            format!("{}\n", value.to_json_pretty())
        } else {
            format!(
                "# kubectl -n {} patch deployment {} --type strategic --patch-file {path}\n{}",
                io_opts.namespace,
                io_opts.deployment,
                value.to_yaml()
            )
        };
        std::fs::write(path, patch).map_err(|e| Failure::Io(format!("{path}: {e}")))?;
    } else if !vars.is_empty() {
        writeln!(err, "{at}: note: --gateway-patch FILE writes the Deployment patch that sets {} on the gateway", vars.iter().map(|v| v.name()).collect::<Vec<_>>().join(", "))
            .map_err(io)?;
    }
    for note in istio::notes(&endpoints) {
        writeln!(err, "{at}: note: {note}").map_err(io)?;
    }
    if let Some((cluster, port, _)) = &rls {
        writeln!(err, "{at}: note: the rate limit service's cluster {cluster} is HTTP/2 only if its Service port {port} is named grpc/grpc-* or has appProtocol: grpc")
            .map_err(io)?;
    }
    if io_opts.namespace_defaulted {
        writeln!(
            err,
            "{at}: note: namespace {} (the default): every object must live in the gateway's own namespace; --namespace NS for another",
            io_opts.namespace
        )
        .map_err(io)?;
    }
    let hs = istio::hosts(&endpoints);
    writeln!(
        err,
        "{at}: EnvoyFilter, Gateway, {} and {} for gateway pods labelled {} in namespace {}",
        plural(hs.len(), "VirtualService", "VirtualServices"),
        plural(hs.iter().filter(|h| !istio::in_cluster(&h.host)).count(), "ServiceEntry/DestinationRule pair", "ServiceEntry/DestinationRule pairs"),
        io_opts.selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        io_opts.namespace
    )
    .map_err(io)?;
    Ok(0)
}

fn comment(text: &str, indent: &str) -> String {
    text.lines().map(|l| format!("#{indent}{l}\n")).collect()
}

fn istio_header(source: &Source, o: &istio::Options, vars: &[istio::EnvVar], endpoints: &[plan::Endpoint]) -> String {
    let selector = o.selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let mut h = format!(
        "# Istio objects for llm-router, generated by `llm-router istio` from {}.\n\
         # For an Istio gateway (ingress or egress) on Istio >= {}.{} (gateway proxies older than that get none of the\n\
         # patches). Apply with `kubectl apply -f`; regenerate rather than edit.\n#\n\
         #   namespace: {}{} (the gateway's own: every object lives there, exportTo \".\")\n\
         #   gateway:   pods labelled {selector}, HTTP port {} (clients call the gateway there)\n\
         #   module:    {} ({})\n\
         #   failure:   {} (--failure-policy)\n#\n",
        source.files,
        istio::MIN_ISTIO.0,
        istio::MIN_ISTIO.1,
        o.namespace,
        if o.namespace_defaulted { " (default; --namespace)" } else { "" },
        o.port,
        o.module.url(),
        match &o.module {
            istio::Module::Remote { sha256: Some(s), .. } => format!("sha256 {s}, fetched by istio-agent"),
            istio::Module::Remote { sha256: None, .. } => "pinned by the digest in the URL, fetched by istio-agent".to_string(),
            istio::Module::Local { .. } => "a file in the istio-proxy container".to_string(),
        },
        match o.failure_policy {
            istio::FailurePolicy::Closed => "FAIL_CLOSED: a module that cannot be fetched or a crashed VM rejects requests (503)",
            istio::FailurePolicy::Open => "FAIL_OPEN: requests pass unrouted when the filter is unavailable",
            istio::FailurePolicy::Reload => "FAIL_RELOAD: a crashed VM is restarted; a module that cannot be fetched rejects requests",
        }
    );
    h.push_str(
        "# - EnvoyFilter: the filter as an ECDS resource with allow_on_headers_stop_iteration (a WasmPlugin cannot set it),\n\
         #   inserted before envoy.filters.http.grpc_stats (where a WasmPlugin of phase STATS would be: after Istio's\n\
         #   authentication and authorization, before routing); the listener's buffer limit and the HTTP connection\n\
         #   manager's stream_idle_timeout and accept_http_10. They apply to EVERY HTTP server of the selected gateway\n\
         #   pods: the filter routes any POST /v1/chat/completions (etc.) they receive. Give the LLM API its own gateway.\n\
         # - Gateway + one VirtualService per provider host: the filter rewrites :authority to the provider's host, so\n\
         #   Envoy picks that host's virtual host, whose route is taken only with the filter's cluster header (which it\n\
         #   strips from every client request) and removes it. A `*` VirtualService of another team cannot catch these.\n\
         # - ServiceEntry + DestinationRule per external host: the outbound|PORT||HOST clusters the filter names, TLS\n\
         #   with SNI and a check that the certificate names the host.\n",
    );
    let secrets: Vec<&str> = vars.iter().filter(|v| !matches!(v, istio::EnvVar::Plain(..))).map(|v| v.name()).collect();
    if !vars.is_empty() {
        h.push_str(&format!(
            "# - Environment: the filter reads {} (host_env_keys). Put the secrets in a Secret and patch the gateway:\n",
            vars.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
        ));
        if !secrets.is_empty() {
            h.push_str(&format!(
                "#     kubectl -n {} create secret generic {} {}\n",
                o.namespace,
                o.secret,
                secrets.iter().map(|s| format!("--from-literal={s}=...")).collect::<Vec<_>>().join(" ")
            ));
        }
        h.push_str(&format!(
            "#     kubectl -n {} patch deployment {} --type strategic --patch-file <the file --gateway-patch writes>:\n",
            o.namespace, o.deployment
        ));
        h.push_str(&comment(&istio::deployment_patch(vars, o).to_yaml(), "       "));
        h.push_str("#   or, with the istio/gateway Helm chart, these values:\n");
        h.push_str(&comment(&istio::helm_values(vars, o).to_yaml(), "       "));
    }
    h.push_str(
        "# - Not here: retries and fallbacks inside one request (LiteLLM num_retries, fallbacks): the failover wiring\n\
         #   (the filter's upstream role on each cluster, the route's internal-redirect policy, the redirector) is not\n\
         #   generated for Istio, so the plugin config says envoy_settings.failover: false and a failed attempt is\n\
         #   returned to the client. Cooldowns, balancing, health probes and metrics work as in Envoy. Envoy retries an\n\
         #   attempt that never reached the provider (connect-failure, refused-stream; 2 retries) on the same cluster.\n\
         # - Not supported: sidecars, waypoints (ambient), Gateway API gateways, HTTPS servers (add tls and your host to\n\
         #   the Gateway's server yourself; untested).\n",
    );
    h.push_str(&format!(
        "# - Metrics (llm_router_*, README \"Metrics\"): give the gateway's ProxyConfig (e.g. the proxy.istio.io/config\n\
         #   annotation) extraStatTags: [{}]\n\
         #   and proxyStatsMatcher.inclusionRegexps: [\".*llm_router_.*\"].\n",
        llm_router::cli_api::TAGS.join(", ")
    ));
    for ep in endpoints {
        h.push_str(&format!("#   cluster:   {} -> {}\n", ep.cluster, ep.url()));
    }
    h.push('\n');
    h
}
