//! `llm-router package`: the filter as an OCI image that istio-agent pulls for a WasmPlugin (or an
//! ECDS extension config) with an `oci://` url, written as an OCI image layout directory
//! (`oci-layout`, `index.json`, `blobs/sha256/…`) that any OCI client pushes as it is
//! (`skopeo copy oci:DIR:TAG docker://REGISTRY/llm-router:TAG`).
//!
//! # What istio-agent accepts (verified in istio/istio `pkg/wasm`, at 86c9f01, Aug 2026)
//!
//! `imagefetcher.go`, `ImageFetcher.PrepareFetch` fetches the manifest (go-containerregistry
//! `remote.Get` + `Image()`, so an index is resolved to the platform's image) and tries, in order:
//!
//! - a manifest of media type `application/vnd.docker.distribution.manifest.v2+json`:
//!   `extractDockerImage` — the *last* layer must be `application/vnd.docker.image.rootfs.diff.tar.gzip`,
//!   a tar.gz holding `plugin.wasm` (`extractWasmPluginBinary`; any directory, by base name);
//! - otherwise `extractOCIStandardImage` (the "compat" variant) — the last layer must be
//!   `application/vnd.oci.image.layer.v1.tar+gzip`, again a tar.gz with `plugin.wasm`;
//! - otherwise `extractOCIArtifactImage` (the "oci" variant of the Wasm image spec,
//!   solo-io/wasm `spec/spec.md`) — the image must have **exactly two layers**
//!   (`number of layers must be 2`), one of media type
//!   `application/vnd.module.wasm.content.layer.v1+wasm` whose blob is the raw module (read with
//!   `Compressed()`, i.e. as stored). Neither the other layer's nor the config's media type is
//!   checked; the spec's other layer is the runtime config,
//!   `application/vnd.module.wasm.config.v1+json` (istio's own test, `imagefetcher_test.go`
//!   "OCI artifact", pushes exactly such a wasm layer + config-typed layer).
//!
//! After extraction `cache.go` `isValidWasmBinary` wants at least 8 bytes starting with `\0asm`.
//!
//! **Checksum.** `PrepareFetch` returns `actualDigest = img.Digest().Hex`: the sha256 of the
//! *image manifest* bytes, hex, without `sha256:`. `cache.go` `LocalFileCache.getOrFetch`
//! compares the configured checksum (`GetOptions.Checksum`, from the remote data source's `sha256`
//! in `convert.go` `rewriteVMConfig`; istiod puts WasmPlugin `spec.sha256` there in
//! `pilot/pkg/model/extensions.go` `buildDataSource`) with that digest for `oci://` urls
//! (`module downloaded from … has checksum …, which does not match`), and with the sha256 of
//! the downloaded bytes — the module itself — for `http(s)://` urls. A url pinned as
//! `oci://HOST/REPO@sha256:HEX` gives the same manifest digest (`getEntry`). The WasmPlugin CRD
//! requires `sha256` to be 64 lowercase hex digits or empty
//! (`manifests/charts/base/files/crd-all.gen.yaml`: `(^$|^[a-f0-9]{64}$)`). The conversion runs on ECDS
//! resources only (`pkg/istio-agent/xds_proxy.go` `rewriteAndForward` →
//! `MaybeConvertWasmExtensionConfig`), so the same rule holds for an EnvoyFilter
//! `EXTENSION_CONFIG` patch with an `oci://` remote; Envoy itself (a remote `http_uri` it fetches)
//! only ever checks the module's sha256.
//!
//! # The image written here: the "oci" variant
//!
//! - config: `application/vnd.module.wasm.config.v1+json`, `{"type":"envoy_proxy",
//!   "abiVersions":[…]}` (the spec's runtime config; the ABI versions are the module's
//!   `proxy_abi_version_*` exports);
//! - layers, exactly two: that same config blob (`application/vnd.module.wasm.config.v1+json`,
//!   title `runtime-config.json`, as in the spec's example) and the module
//!   (`application/vnd.module.wasm.content.layer.v1+wasm`, title `llm_router.wasm`), byte for byte;
//! - the manifest (`application/vnd.oci.image.manifest.v1+json`), referenced from `index.json`
//!   with the tag as `org.opencontainers.image.ref.name`.
//!
//! Nothing else goes in: no timestamps, no tag inside the manifest, so the same module always
//! gives the same manifest digest, whatever the tag. A client that copies the layout without
//! rewriting the manifest (skopeo does: tests/e2e/test_oci_package.py) keeps that digest in the
//! registry.

use crate::value::Value;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
pub const WASM_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The annotation on an `index.json` entry that names its tag (OCI image layout spec).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const TITLE: &str = "org.opencontainers.image.title";

pub const DEFAULT_OUT: &str = "target/oci";
pub const DEFAULT_TAG: &str = env!("CARGO_PKG_VERSION");

/// A content-addressed blob: its bytes and their sha256 (hex).
#[derive(Debug, Clone)]
pub struct Blob {
    pub sha256: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(bytes: Vec<u8>) -> Blob {
        Blob { sha256: sha256_hex(&bytes), bytes }
    }

    pub fn digest(&self) -> String {
        format!("sha256:{}", self.sha256)
    }

    fn descriptor(&self, media_type: &str, annotations: &[(&str, &str)]) -> Value {
        let mut d = vec![
            ("mediaType", Value::from(media_type)),
            ("digest", Value::from(self.digest())),
            ("size", Value::Int(self.bytes.len() as i128)),
        ];
        if !annotations.is_empty() {
            d.push(("annotations", Value::map(annotations.iter().map(|(k, v)| (*k, Value::from(*v))))));
        }
        Value::map(d)
    }
}

/// The image: the runtime config (also the first layer), the module (the second) and the manifest.
#[derive(Debug, Clone)]
pub struct Image {
    pub config: Blob,
    pub module: Blob,
    pub manifest: Blob,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses what istio-agent and Envoy would refuse: not `\0asm`, or a component rather than a
/// core module (Envoy's runtimes load core modules, version 1).
pub fn check_module(bytes: &[u8]) -> Result<(), String> {
    if !bytes.starts_with(b"\0asm") {
        return Err("not a WebAssembly module (it does not start with \\0asm)".into());
    }
    match bytes.get(4..8) {
        Some([1, 0, 0, 0]) => Ok(()),
        Some([_, _, 1, 0]) => Err("a WebAssembly component, not a core module (Envoy loads core modules)".into()),
        Some(v) => Err(format!("unsupported WebAssembly binary version {v:02x?} (Envoy loads version 1 modules)")),
        None => Err("truncated WebAssembly module (shorter than its 8-byte header)".into()),
    }
}

fn leb_u32(bytes: &[u8], pos: &mut usize) -> Option<u32> {
    let mut value: u32 = 0;
    let mut shift = 0u32;
    loop {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        if shift > 28 {
            return None;
        }
        value |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
    }
}

/// The module's export names (`None` when its sections do not parse).
pub fn exports(module: &[u8]) -> Option<Vec<String>> {
    let mut pos = 8;
    while pos < module.len() {
        let id = *module.get(pos)?;
        pos += 1;
        let size = leb_u32(module, &mut pos)? as usize;
        let end = pos.checked_add(size)?;
        let body = module.get(pos..end)?;
        if id == 7 {
            let mut p = 0;
            let count = leb_u32(body, &mut p)?;
            let mut names = Vec::new();
            for _ in 0..count {
                let len = leb_u32(body, &mut p)? as usize;
                let name = body.get(p..p.checked_add(len)?)?;
                p += len;
                body.get(p)?; // export kind
                p += 1;
                leb_u32(body, &mut p)?; // index
                names.push(String::from_utf8_lossy(name).into_owned());
            }
            return Some(names);
        }
        pos = end;
    }
    Some(Vec::new())
}

/// The proxy-wasm ABI versions the module exports (`proxy_abi_version_0_2_1`, …), sorted.
pub fn abi_versions(module: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = exports(module)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with("proxy_abi_version_") && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Builds the image for `module` (checked with [`check_module`] first). Deterministic.
pub fn image(module: Vec<u8>) -> Image {
    let config = Value::map([
        ("type", Value::from("envoy_proxy")),
        ("abiVersions", Value::seq(abi_versions(&module).into_iter().map(Value::from))),
    ]);
    let config = Blob::new(config.to_json().into_bytes());
    let module = Blob::new(module);
    let manifest = Value::map([
        ("schemaVersion", Value::Int(2)),
        ("mediaType", Value::from(MANIFEST_MEDIA_TYPE)),
        ("config", config.descriptor(CONFIG_MEDIA_TYPE, &[])),
        (
            "layers",
            Value::seq([
                config.descriptor(CONFIG_MEDIA_TYPE, &[(TITLE, "runtime-config.json")]),
                module.descriptor(WASM_MEDIA_TYPE, &[(TITLE, "llm_router.wasm")]),
            ]),
        ),
    ]);
    let manifest = Blob::new(manifest.to_json().into_bytes());
    Image { config, module, manifest }
}

/// An OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}` (distribution spec).
pub fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    first_ok && tag.len() <= 128 && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The entries of an existing `index.json` other than `tag`'s, so a layout can hold several tags.
fn other_entries(dir: &Path, tag: &str) -> Result<Vec<Value>, String> {
    let path = dir.join("index.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let index: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: not an OCI image index: {e}", path.display()))?;
    let manifests = index
        .get("manifests")
        .and_then(|m| m.as_array())
        .ok_or_else(|| format!("{}: not an OCI image index (no `manifests` list)", path.display()))?;
    Ok(manifests
        .iter()
        .filter(|m| m.get("annotations").and_then(|a| a.get(REF_NAME)).and_then(|n| n.as_str()) != Some(tag))
        .cloned()
        .map(Value::from)
        .collect())
}

/// Writes `image` into the OCI image layout `dir` under `tag`. `dir` may be missing, empty, or an
/// existing layout (other tags are kept; `tag` is replaced); anything else is refused.
pub fn write_layout(dir: &Path, image: &Image, tag: &str) -> Result<(), String> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() && !dir.join("oci-layout").is_file() {
                return Err(format!("{}: exists and is not an OCI image layout (no oci-layout file); choose another -o DIR", dir.display()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    let others = other_entries(dir, tag)?;
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| format!("{}: {e}", blobs.display()))?;
    for blob in [&image.config, &image.module, &image.manifest] {
        write_file(&blobs.join(&blob.sha256), &blob.bytes)?;
    }
    write_file(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut manifests = others;
    manifests.push(image.manifest.descriptor(MANIFEST_MEDIA_TYPE, &[(REF_NAME, tag)]));
    let index = Value::map([("schemaVersion", Value::Int(2)), ("mediaType", Value::from(INDEX_MEDIA_TYPE)), ("manifests", Value::Seq(manifests))]);
    // index.json last, and by rename: it never names a blob that is not there.
    let tmp = dir.join("index.json.tmp");
    write_file(&tmp, index.to_json().as_bytes())?;
    std::fs::rename(&tmp, dir.join("index.json")).map_err(|e| format!("{}: {e}", dir.join("index.json").display()))
}

/// What the command line can fail with: a usage error (exit 2) or a failure (exit 1).
#[derive(Debug)]
pub enum Error {
    Usage(String),
    Failed(String),
}

struct Args {
    wasm: PathBuf,
    out: PathBuf,
    tag: String,
}

fn parse(args: &[String]) -> Result<Args, Error> {
    let (mut wasm, mut out, mut tag) = (None, None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let slot = match name {
            "--wasm" => &mut wasm,
            "-o" | "--output" => &mut out,
            "--tag" => &mut tag,
            _ if name.starts_with('-') => return Err(Error::Usage(format!("unknown option `{arg}`"))),
            _ => return Err(Error::Usage(format!("unexpected argument `{arg}` (package takes options only)"))),
        };
        let value = match inline {
            Some(v) => v,
            None => it.next().cloned().ok_or_else(|| Error::Usage(format!("{name} needs a value")))?,
        };
        *slot = Some(value);
    }
    let tag = tag.unwrap_or_else(|| DEFAULT_TAG.to_string());
    if !valid_tag(&tag) {
        return Err(Error::Usage(format!("--tag: `{tag}` is not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]*, at most 128 characters)")));
    }
    Ok(Args {
        wasm: PathBuf::from(wasm.unwrap_or_else(|| crate::envoy::DEFAULT_WASM.to_string())),
        out: PathBuf::from(out.unwrap_or_else(|| DEFAULT_OUT.to_string())),
        tag,
    })
}

/// `llm-router package [--wasm PATH] [-o DIR] [--tag TAG]`.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, Error> {
    let a = parse(args)?;
    let wasm = a.wasm.display();
    let bytes = std::fs::read(&a.wasm).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound { " (build it with scripts/build, or pass --wasm PATH)" } else { "" };
        Error::Failed(format!("{wasm}: cannot read the module: {e}{hint}"))
    })?;
    check_module(&bytes).map_err(|e| Error::Failed(format!("{wasm}: {e}")))?;
    let image = image(bytes);
    write_layout(&a.out, &image, &a.tag).map_err(Error::Failed)?;
    let dir = a.out.display();
    let w = |e: std::io::Error| Error::Failed(e.to_string());
    writeln!(out, "image: {dir} (OCI image layout, tag {})", a.tag).map_err(w)?;
    writeln!(out, "module sha256: {}", image.module.sha256).map_err(w)?;
    writeln!(out, "manifest digest: {}", image.manifest.digest()).map_err(w)?;
    if abi_versions(&image.module.bytes).is_empty() {
        writeln!(err, "{wasm}: warning: exports no proxy_abi_version_* function: not a proxy-wasm module?").map_err(w)?;
    }
    let (m, h) = (&image.manifest.sha256, &image.module.sha256);
    writeln!(
        err,
        "{dir}: note: WasmPlugin `sha256` for `url: oci://REGISTRY/llm-router:{tag}` is the manifest digest without `sha256:`: {m}\n\
         {dir}: note: (istio-agent compares it with the pulled manifest's digest; or pin the url: oci://REGISTRY/llm-router@sha256:{m})\n\
         {dir}: note: for an http(s):// url serving the .wasm itself (WasmPlugin, or Envoy's vm_config.code.remote.sha256) it is the module sha256: {h}\n\
         {dir}: note: push it with any OCI client, e.g. skopeo copy oci:{dir}:{tag} docker://REGISTRY/llm-router:{tag}",
        tag = a.tag
    )
    .map_err(w)?;
    Ok(0)
}
