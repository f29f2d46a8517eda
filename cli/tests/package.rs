//! `llm-router package`: the OCI image layout it writes, read back file by file.

mod common;
use common::{dir, json, run};
use llm_router_cli::package::{self, CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, REF_NAME, WASM_MEDIA_TYPE};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;

/// A valid core module: one empty function, exported as `name`.
fn module(name: &str) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]); // type section: () -> ()
    m.extend_from_slice(&[3, 2, 1, 0]); // function section: one function of type 0
    let mut export = vec![1, name.len() as u8];
    export.extend_from_slice(name.as_bytes());
    export.extend_from_slice(&[0, 0]); // a function, index 0
    m.push(7);
    m.push(export.len() as u8);
    m.extend_from_slice(&export);
    m.extend_from_slice(&[10, 4, 1, 2, 0, 0x0b]); // code section: no locals, `end`
    m
}

fn proxy_wasm_module() -> Vec<u8> {
    module("proxy_abi_version_0_2_1")
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn write_module(d: &Path, bytes: &[u8]) -> String {
    let p = d.join("llm_router.wasm");
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p.display().to_string()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
    read(&layout.join("blobs/sha256").join(hex))
}

/// The value after `label: ` on stdout.
fn printed<'a>(stdout: &'a str, label: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no `{label}:` line in\n{stdout}"))
}

struct Packaged {
    layout: std::path::PathBuf,
    stdout: String,
    stderr: String,
}

fn package_ok(d: &Path, wasm: &str, out: &str, tag: &str) -> Packaged {
    let layout = d.join(out);
    let o = run(&["package", "--wasm", wasm, "-o", &layout.display().to_string(), "--tag", tag], &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    Packaged { layout, stdout: o.stdout, stderr: o.stderr }
}

fn index(layout: &Path) -> Value {
    json(&String::from_utf8_lossy(&read(&layout.join("index.json"))))
}

fn manifest_for(layout: &Path, tag: &str) -> (String, Value) {
    let idx = index(layout);
    let entries = idx["manifests"].as_array().unwrap_or_else(|| panic!("no manifests: {idx}"));
    let e = entries.iter().find(|m| m["annotations"][REF_NAME] == tag).unwrap_or_else(|| panic!("no entry for {tag}: {idx}"));
    let digest = e["digest"].as_str().unwrap_or_default().to_string();
    let bytes = blob(layout, &digest);
    assert_eq!(e["size"], bytes.len(), "index size of {digest}");
    assert_eq!(e["mediaType"], MANIFEST_MEDIA_TYPE);
    (digest, json(&String::from_utf8_lossy(&bytes)))
}

#[test]
fn writes_an_oci_layout_in_the_wasm_oci_variant() {
    let d = dir("package-layout");
    let wasm_bytes = proxy_wasm_module();
    let wasm = write_module(&d, &wasm_bytes);
    let p = package_ok(&d, &wasm, "oci", "1.2.3");

    assert_eq!(String::from_utf8_lossy(&read(&p.layout.join("oci-layout"))), r#"{"imageLayoutVersion":"1.0.0"}"#);
    let idx = index(&p.layout);
    assert_eq!(idx["schemaVersion"], 2);
    assert_eq!(idx["mediaType"], INDEX_MEDIA_TYPE);
    assert_eq!(idx["manifests"].as_array().map(Vec::len), Some(1));

    let (digest, m) = manifest_for(&p.layout, "1.2.3");
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
    assert_eq!(m["config"]["mediaType"], CONFIG_MEDIA_TYPE);
    // istio-agent's extractOCIArtifactImage: exactly two layers, one of them the raw module.
    let layers = m["layers"].as_array().unwrap_or_else(|| panic!("no layers: {m}"));
    assert_eq!(layers.len(), 2, "{m}");
    assert_eq!(layers[0]["mediaType"], CONFIG_MEDIA_TYPE);
    assert_eq!(layers[0]["digest"], m["config"]["digest"]);
    assert_eq!(layers[0]["annotations"]["org.opencontainers.image.title"], "runtime-config.json");
    assert_eq!(layers[1]["mediaType"], WASM_MEDIA_TYPE);
    assert_eq!(layers[1]["annotations"]["org.opencontainers.image.title"], "llm_router.wasm");
    assert_eq!(layers[1]["digest"], format!("sha256:{}", sha256(&wasm_bytes)));
    assert_eq!(layers[1]["size"], wasm_bytes.len());
    assert_eq!(blob(&p.layout, layers[1]["digest"].as_str().unwrap_or_default()), wasm_bytes, "the layer is the module, byte for byte");
    // No tag, no timestamp inside the image.
    assert!(m.get("annotations").is_none(), "{m}");

    let config_bytes = blob(&p.layout, m["config"]["digest"].as_str().unwrap_or_default());
    assert_eq!(m["config"]["size"], config_bytes.len());
    let config = json(&String::from_utf8_lossy(&config_bytes));
    assert_eq!(config["type"], "envoy_proxy");
    assert_eq!(config["abiVersions"], serde_json::json!(["proxy_abi_version_0_2_1"]));

    // Every blob is named by its sha256; nothing else is in the layout.
    let mut names: Vec<String> = std::fs::read_dir(p.layout.join("blobs/sha256"))
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .map(|path| {
            assert_eq!(path.file_name().and_then(|n| n.to_str()).map(str::to_string), Some(sha256(&read(&path))), "{}", path.display());
            path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string()
        })
        .collect();
    names.sort();
    let mut want = vec![sha256(&wasm_bytes), digest.trim_start_matches("sha256:").to_string(), sha256(&config_bytes)];
    want.sort();
    assert_eq!(names, want);
    let mut top: Vec<String> =
        std::fs::read_dir(&p.layout).unwrap_or_else(|e| panic!("{e}")).map(|e| e.unwrap_or_else(|e| panic!("{e}")).file_name().to_string_lossy().into_owned()).collect();
    top.sort();
    assert_eq!(top, ["blobs", "index.json", "oci-layout"]);

    // What it prints: the module's sha256 and the manifest digest, and which one WasmPlugin wants.
    assert_eq!(printed(&p.stdout, "module sha256"), sha256(&wasm_bytes));
    assert_eq!(printed(&p.stdout, "manifest digest"), digest);
    assert_eq!(digest, format!("sha256:{}", sha256(&blob(&p.layout, &digest))));
    let hex = digest.trim_start_matches("sha256:");
    assert!(p.stderr.contains(&format!("WasmPlugin `sha256` for `url: oci://REGISTRY/llm-router:1.2.3` is the manifest digest without `sha256:`: {hex}")), "{}", p.stderr);
    assert!(p.stderr.contains(&format!("it is the module sha256: {}", sha256(&wasm_bytes))), "{}", p.stderr);
    assert!(p.stderr.contains(&format!("skopeo copy oci:{}:1.2.3 docker://REGISTRY/llm-router:1.2.3", p.layout.display())), "{}", p.stderr);
    assert!(!p.stderr.contains("warning"), "{}", p.stderr);
}

#[test]
fn digests_are_deterministic_and_independent_of_the_tag() {
    let d = dir("package-determinism");
    let wasm = write_module(&d, &proxy_wasm_module());
    let a = package_ok(&d, &wasm, "a", "v1");
    let b = package_ok(&d, &wasm, "b", "other-tag");
    assert_eq!(printed(&a.stdout, "manifest digest"), printed(&b.stdout, "manifest digest"));
    assert_eq!(printed(&a.stdout, "module sha256"), printed(&b.stdout, "module sha256"));
    for entry in std::fs::read_dir(a.layout.join("blobs/sha256")).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let other = b.layout.join("blobs/sha256").join(path.file_name().unwrap_or_default());
        assert_eq!(read(&path), read(&other), "{}", path.display());
    }
    // Writing the same tag again gives the same bytes, index.json included.
    let before = read(&a.layout.join("index.json"));
    let again = package_ok(&d, &wasm, "a", "v1");
    assert_eq!(read(&again.layout.join("index.json")), before);
    assert_eq!(printed(&again.stdout, "manifest digest"), printed(&a.stdout, "manifest digest"));

    // The library agrees with the command, and a different module gives a different digest.
    let img = package::image(proxy_wasm_module());
    assert_eq!(img.manifest.digest(), printed(&a.stdout, "manifest digest"));
    assert_ne!(package::image(module("proxy_abi_version_0_2_0")).manifest.digest(), img.manifest.digest());
}

#[test]
fn an_existing_layout_keeps_its_other_tags() {
    let d = dir("package-tags");
    let one = write_module(&d, &proxy_wasm_module());
    let other_dir = d.join("other");
    std::fs::create_dir_all(&other_dir).unwrap_or_else(|e| panic!("{e}"));
    let two = write_module(&other_dir, &module("proxy_abi_version_0_2_0"));
    let first = package_ok(&d, &one, "oci", "one");
    let second = package_ok(&d, &two, "oci", "two");
    let _ = package_ok(&d, &two, "oci", "two"); // the same tag again: replaced, not duplicated
    let idx = index(&first.layout);
    assert_eq!(idx["manifests"].as_array().map(Vec::len), Some(2), "{idx}");
    assert_eq!(manifest_for(&first.layout, "one").0, printed(&first.stdout, "manifest digest"));
    assert_eq!(manifest_for(&first.layout, "two").0, printed(&second.stdout, "manifest digest"));
    // Moving a tag to another module.
    let _ = package_ok(&d, &one, "oci", "two");
    assert_eq!(manifest_for(&first.layout, "two").0, printed(&first.stdout, "manifest digest"));
    assert_eq!(index(&first.layout)["manifests"].as_array().map(Vec::len), Some(2));
}

fn refused(args: &[&str], code: i32, needle: &str) -> String {
    let o = run(args, &[]);
    assert_eq!(o.code, code, "{args:?}: {}", o.stderr);
    assert!(o.stderr.contains(needle), "{args:?}: expected `{needle}` in\n{}", o.stderr);
    assert!(o.stdout.is_empty(), "{}", o.stdout);
    o.stderr
}

#[test]
fn refuses_a_missing_or_invalid_module() {
    let d = dir("package-invalid");
    let out = d.join("oci").display().to_string();
    let missing = d.join("nope.wasm").display().to_string();
    let msg = refused(&["package", "--wasm", &missing, "-o", &out], 1, "cannot read the module");
    assert!(msg.starts_with(&format!("llm-router: {missing}: cannot read the module")), "{msg}");
    assert!(msg.contains("scripts/build"), "{msg}");

    let cases: [(&str, &[u8], &str); 5] = [
        ("text.wasm", b"this is not wasm at all", "not a WebAssembly module (it does not start with \\0asm)"),
        ("empty.wasm", b"", "not a WebAssembly module"),
        ("elf.wasm", b"\x7fELF\x02\x01\x01\0\0\0\0\0", "not a WebAssembly module"),
        ("short.wasm", b"\0asm\x01", "truncated WebAssembly module"),
        ("component.wasm", b"\0asm\x0d\0\x01\0", "a WebAssembly component, not a core module"),
    ];
    for (name, bytes, needle) in cases {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{e}"));
        let path = p.display().to_string();
        let msg = refused(&["package", "--wasm", &path, "-o", &out], 1, needle);
        assert!(msg.starts_with(&format!("llm-router: {path}: ")), "{msg}");
    }
    assert!(!Path::new(&out).exists(), "nothing is written for a refused module");
}

#[test]
fn refuses_bad_arguments_and_foreign_directories() {
    let d = dir("package-usage");
    let wasm = write_module(&d, &proxy_wasm_module());
    let out = d.join("oci").display().to_string();
    refused(&["package", "--wasm", &wasm, "-o", &out, "--tag", "no/slashes"], 2, "--tag: `no/slashes` is not a valid tag");
    refused(&["package", "--wasm", &wasm, "--tag", "-leading-dash"], 2, "is not a valid tag");
    refused(&["package", "--wasm", &wasm, "--tag", &"x".repeat(129)], 2, "is not a valid tag");
    refused(&["package", "--wasm", &wasm, "--format", "json"], 2, "unknown option `--format`");
    refused(&["package", &wasm], 2, "unexpected argument");
    refused(&["package", "--wasm"], 2, "--wasm needs a value");
    assert!(!Path::new(&out).exists());

    // A directory that is not an OCI layout is not written into.
    let foreign = d.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(foreign.join("keep.txt"), "mine").unwrap_or_else(|e| panic!("{e}"));
    let foreign_s = foreign.display().to_string();
    refused(&["package", "--wasm", &wasm, "-o", &foreign_s], 1, "is not an OCI image layout");
    assert!(!foreign.join("blobs").exists());
    // A layout whose index.json is broken is not overwritten.
    let broken = d.join("broken");
    std::fs::create_dir_all(&broken).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(broken.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(broken.join("index.json"), "{").unwrap_or_else(|e| panic!("{e}"));
    refused(&["package", "--wasm", &wasm, "-o", &broken.display().to_string()], 1, "not an OCI image index");
    assert_eq!(read(&broken.join("index.json")), b"{");

    // --option=value and an empty existing directory are fine; the default tag is the version.
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap_or_else(|e| panic!("{e}"));
    let o = run(&["package", &format!("--wasm={wasm}"), "-o", &empty.display().to_string()], &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    manifest_for(&empty, env!("CARGO_PKG_VERSION"));
}

#[test]
fn warns_about_a_module_without_the_proxy_wasm_abi() {
    let d = dir("package-no-abi");
    let wasm = write_module(&d, &module("_start"));
    let p = package_ok(&d, &wasm, "oci", "t");
    assert!(p.stderr.contains("warning: exports no proxy_abi_version_* function"), "{}", p.stderr);
    let (_, m) = manifest_for(&p.layout, "t");
    let config = json(&String::from_utf8_lossy(&blob(&p.layout, m["config"]["digest"].as_str().unwrap_or_default())));
    assert_eq!(config["abiVersions"], serde_json::json!([]));
}

#[test]
fn export_parsing_survives_garbage() {
    assert_eq!(package::abi_versions(&proxy_wasm_module()), ["proxy_abi_version_0_2_1"]);
    let good = proxy_wasm_module();
    for cut in 0..good.len() {
        let _ = package::abi_versions(good.get(..cut).unwrap_or_default());
    }
    let mut huge = b"\0asm\x01\0\0\0\x07\xff\xff\xff\xff\x0f".to_vec();
    huge.extend_from_slice(&[0xff; 16]);
    assert!(package::exports(&huge).is_none());
}

#[test]
fn help_lists_package() {
    let o = run(&["--help"], &[]);
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("llm-router package [--wasm PATH] [-o DIR] [--tag TAG]"), "{}", o.stdout);
}
