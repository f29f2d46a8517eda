"""`llm-router package` against a real registry and a real OCI client.

The tool writes the built filter as an OCI image layout in the Wasm image format istio-agent pulls for a
WasmPlugin `oci://` url (cli/src/package.rs has what istio-agent accepts, from istio's pkg/wasm). Here a real
`docker-registry` (Debian's build of distribution, filesystem storage in a temp dir, plain HTTP on 127.0.0.1)
and real `skopeo` push the layout, pull it back and inspect it:

    llm-router package --wasm target/wasm32-wasip1/release/llm_router.wasm -o DIR --tag TAG
    skopeo copy --dest-tls-verify=false oci:DIR:TAG docker://127.0.0.1:PORT/llm-router:TAG
    skopeo copy --src-tls-verify=false docker://127.0.0.1:PORT/llm-router:TAG oci:OTHER:TAG

and the module must come back byte for byte, with the Wasm media types, under the manifest digest the tool
printed (which is what WasmPlugin `sha256` is compared with for an oci:// url).

scripts/setup installs both binaries. Without them this module skips, unless LLM_ROUTER_REQUIRE_OCI is set
(scripts/test sets it), and then it fails: CI never skips it silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .support.envoy import REPO, free_port, stop_process_group

DOCKER_REGISTRY = Path("/usr/bin/docker-registry")
SKOPEO = shutil.which("skopeo")
CLI = ["cargo", "run", "-q", "-p", "llm-router-cli", "--"]
REPOSITORY = "llm-router"

CONFIG_MEDIA_TYPE = "application/vnd.module.wasm.config.v1+json"
WASM_MEDIA_TYPE = "application/vnd.module.wasm.content.layer.v1+wasm"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module", autouse=True)
def oci_tools():
    missing = [name for name, there in (("docker-registry", DOCKER_REGISTRY.exists()), ("skopeo", SKOPEO)) if not there]
    if missing:
        msg = (f"{' and '.join(missing)} not installed (Debian packages docker-registry, skopeo): run scripts/setup")
        if os.environ.get("LLM_ROUTER_REQUIRE_OCI"):
            pytest.fail(f"{msg} (LLM_ROUTER_REQUIRE_OCI is set, so this does not skip)", pytrace=False)
        pytest.skip(msg)


class Registry:
    """docker-registry on a free 127.0.0.1 port, storing into `root`; plain HTTP, no auth."""

    def __init__(self, root: Path):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        storage = root / "storage"
        storage.mkdir()
        self.config = root / "config.yml"
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
            f"http:\n  addr: {self.host}\n  secret: e2e-only\n")
        self.log_path = root / "registry.log"
        self._log = open(self.log_path, "wb")
        # REGISTRY_* variables would override the config file.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.proc = subprocess.Popen([str(DOCKER_REGISTRY), "serve", str(self.config)], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env)

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self, timeout: float = 20.0) -> "Registry":
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"docker-registry exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"docker-registry was not ready within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def get(self, path: str, accept: str = "") -> tuple:
        """(body, headers) of GET /v2/<path>."""
        req = urllib.request.Request(f"http://{self.host}/v2/{path}", headers={"Accept": accept} if accept else {})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read(), r.headers

    def stop(self) -> None:
        stop_process_group(self.proc)
        self._log.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    r = Registry(tmp_path_factory.mktemp("registry"))
    try:
        yield r.wait_ready()
    finally:
        r.stop()


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> Path:
    """skopeo's signature policy, so the test does not depend on /etc/containers/policy.json."""
    p = tmp_path_factory.mktemp("skopeo") / "policy.json"
    p.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    return p


def skopeo(policy: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([SKOPEO, "--policy", str(policy), *args], capture_output=True, timeout=300)
    assert proc.returncode == 0, f"skopeo {' '.join(args)} failed:\n{proc.stderr.decode(errors='replace')}"
    return proc


def package(wasm: Path, out: Path, tag: str) -> dict:
    proc = subprocess.run(CLI + ["package", "--wasm", str(wasm), "-o", str(out), "--tag", tag], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"llm-router package failed:\n{proc.stderr}"
    printed = dict(re.findall(r"^(module sha256|manifest digest): (\S+)$", proc.stdout, re.M))
    assert set(printed) == {"module sha256", "manifest digest"}, proc.stdout
    sha256_note = re.search(r"WasmPlugin `sha256` for `url: oci://\S+` is the manifest digest without `sha256:`: "
                            r"([0-9a-f]+)", proc.stderr)
    assert sha256_note, proc.stderr
    return {**printed, "wasmplugin sha256": sha256_note.group(1), "stderr": proc.stderr}


def layout_manifest(layout: Path, tag: str) -> tuple:
    """(digest, raw manifest bytes) of `tag` in an OCI image layout."""
    index = json.loads((layout / "index.json").read_text())
    [entry] = [m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    raw = layout_blob(layout, entry["digest"])
    assert entry["size"] == len(raw)
    return entry["digest"], raw


def layout_blob(layout: Path, digest: str) -> bytes:
    algo, hexdigest = digest.split(":")
    assert algo == "sha256", digest
    data = (layout / "blobs" / "sha256" / hexdigest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hexdigest, f"blob {digest} does not match its name"
    return data


def istio_agent_extract(manifest: dict, fetch_blob) -> bytes:
    """istio-agent's choice, restated from istio pkg/wasm/imagefetcher.go (PrepareFetch's binaryFetcher): a
    Docker schema 2 manifest or a tar+gzip last layer would be unpacked for plugin.wasm; otherwise
    extractOCIArtifactImage wants exactly two layers, one of them the raw module, which cache.go's
    isValidWasmBinary then checks for the \\0asm header."""
    assert manifest.get("mediaType") != "application/vnd.docker.distribution.manifest.v2+json"
    layers = manifest["layers"]
    assert layers[-1]["mediaType"] != "application/vnd.oci.image.layer.v1.tar+gzip", "would be read as the compat variant"
    assert len(layers) == 2, f"extractOCIArtifactImage: number of layers must be 2 but got {len(layers)}"
    wasm_layer = next((l for l in layers if l["mediaType"] == WASM_MEDIA_TYPE), None)  # the first match
    assert wasm_layer, f"could not find the layer of type {WASM_MEDIA_TYPE}"
    module = fetch_blob(wasm_layer["digest"])
    assert len(module) >= 8 and module[:4] == b"\0asm", "isValidWasmBinary"
    return module


def test_push_to_a_registry_and_pull_back(wasm, registry, policy, tmp_path):
    module = wasm.read_bytes()
    tag = "e2e-1"
    layout = tmp_path / "oci"
    printed = package(wasm, layout, tag)

    # What the tool printed: the module's sha256, and the manifest digest (= WasmPlugin sha256 for oci://).
    assert printed["module sha256"] == hashlib.sha256(module).hexdigest()
    digest, local_raw = layout_manifest(layout, tag)
    assert printed["manifest digest"] == digest == "sha256:" + hashlib.sha256(local_raw).hexdigest()
    assert printed["wasmplugin sha256"] == digest.removeprefix("sha256:")
    assert re.fullmatch(r"[a-f0-9]{64}", printed["wasmplugin sha256"]), "the WasmPlugin CRD's pattern for sha256"
    ref = f"{registry.host}/{REPOSITORY}:{tag}"
    assert f"skopeo copy oci:{layout}:{tag} docker://REGISTRY/{REPOSITORY}:{tag}" in printed["stderr"]

    # Push with the command the tool suggests (registry address filled in, plain HTTP).
    skopeo(policy, "copy", "--dest-tls-verify=false", f"oci:{layout}:{tag}", f"docker://{ref}")

    # The registry serves the manifest under the printed digest, byte for byte as written.
    raw, headers = registry.get(f"{REPOSITORY}/manifests/{tag}", accept=MANIFEST_MEDIA_TYPE)
    assert headers["Docker-Content-Digest"] == digest, headers
    assert headers["Content-Type"] == MANIFEST_MEDIA_TYPE, headers
    assert raw == local_raw
    inspected = skopeo(policy, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout
    assert inspected == local_raw
    assert "sha256:" + hashlib.sha256(inspected).hexdigest() == digest
    # Pinned by digest, as `url: oci://HOST/llm-router@sha256:...` would fetch it.
    pinned = skopeo(policy, "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{REPOSITORY}@{digest}")
    assert pinned.stdout == local_raw

    # Media types: the Wasm image spec's oci variant.
    manifest = json.loads(raw)
    assert manifest["mediaType"] == MANIFEST_MEDIA_TYPE
    assert manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    assert [l["mediaType"] for l in manifest["layers"]] == [CONFIG_MEDIA_TYPE, WASM_MEDIA_TYPE]
    config = json.loads(registry.get(f"{REPOSITORY}/blobs/{manifest['config']['digest']}")[0])
    assert config["type"] == "envoy_proxy" and "proxy_abi_version_0_2_1" in config["abiVersions"], config

    # What istio-agent would extract from the registry: the module, unchanged.
    served = istio_agent_extract(manifest, lambda d: registry.get(f"{REPOSITORY}/blobs/{d}")[0])
    assert served == module

    # Pull it back into another layout: same manifest, the layer is the module byte for byte.
    pulled = tmp_path / "pulled"
    skopeo(policy, "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{pulled}:{tag}")
    pulled_digest, pulled_raw = layout_manifest(pulled, tag)
    assert pulled_digest == digest
    assert pulled_raw == local_raw
    pulled_manifest = json.loads(pulled_raw)
    [wasm_layer] = [l for l in pulled_manifest["layers"] if l["mediaType"] == WASM_MEDIA_TYPE]
    assert layout_blob(pulled, wasm_layer["digest"]) == module
    assert wasm_layer["size"] == len(module)
    assert layout_blob(pulled, pulled_manifest["config"]["digest"]) == layout_blob(layout, manifest["config"]["digest"])


def test_repackaging_gives_the_same_digest_in_the_registry(wasm, registry, policy, tmp_path):
    """Same module, another tag and directory: the same manifest digest, so a WasmPlugin sha256 stays valid
    across rebuilds of the same module and re-tags."""
    first = package(wasm, tmp_path / "a", "e2e-a")
    second = package(wasm, tmp_path / "b", "e2e-b")
    assert first["manifest digest"] == second["manifest digest"]
    for layout, tag in ((tmp_path / "a", "e2e-a"), (tmp_path / "b", "e2e-b")):
        skopeo(policy, "copy", "--dest-tls-verify=false", f"oci:{layout}:{tag}",
               f"docker://{registry.host}/{REPOSITORY}:{tag}")
    for tag in ("e2e-a", "e2e-b"):
        _, headers = registry.get(f"{REPOSITORY}/manifests/{tag}", accept=MANIFEST_MEDIA_TYPE)
        assert headers["Docker-Content-Digest"] == first["manifest digest"]
