"""Differential test: `llm-router check --print-json` reads YAML exactly as LiteLLM's `yaml.safe_load` does.

LiteLLM loads its config.yaml with PyYAML's `safe_load`; the operator tool has its own reader (cli/src/yaml.rs). For
every document here both read it, and the values must be equal, types and key order included (`True` is not `1`, `1` is
not `1.0`; merged keys come in PyYAML's order). PyYAML is the oracle, so the generated documents need no expected values.

How the comparison treats what JSON cannot carry, as the tool does on purpose (cli/src/yaml.rs module doc):
- timestamps (`2024-02-01`, unquoted) are kept as the text written: the oracle is `safe_load` with the timestamp
  constructor replaced by "the scalar's text";
- `.inf` / `.nan` have no JSON form: where PyYAML gives one, the tool must refuse the file;
- keys that are not strings become JSON's spelling (`1` -> "1", `True` -> "true", `None` -> "null").
Where PyYAML raises, the tool must refuse the file too (no JSON, or a reader error). The tool may additionally
refuse a document on purpose (more than one document, unknown tags); no case here relies on that.
Kept different on purpose (cli/src/yaml.rs module doc), tested explicitly below: keys `1` and `true` in one mapping
(test_true_and_1_keys), `!!binary` (bytes in PyYAML; base64 text here), an implicit flow key spanning lines.

Inputs: hand-written shapes of real LiteLLM configs (SHAPES) and a seeded generator of nested block/flow
collections with assorted scalar spellings (a few hundred documents, a few seconds).

Runs without Envoy (`pytest --noconftest tests/e2e/test_yaml_pyyaml.py` skips the suite's Envoy fixtures).
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "target" / "debug" / "llm-router"


class _Loader(yaml.SafeLoader):
    """`safe_load`, except that timestamps stay the text written (JSON has no dates; the tool keeps them so)."""


_Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))

REFUSED = "refused"
# The reader's own refusals (it still prints the JSON it could make; the filter's checks are not compared).
READ_ERRORS = ("error: invalid YAML", "no JSON form", "unsupported tag", "cannot construct", "is not a valid !!",
               "a mapping key must be", "`<<`", "value key")


def _json_ready(v):
    """PyYAML's value as the tool must give it; REFUSED when it has no JSON form."""
    if isinstance(v, dict):
        return {(_key(k)): _json_ready(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_ready(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        raise _NoJson
    if isinstance(v, (bytes, set, tuple)):  # !!binary, !!set, !!omap/!!pairs items: no JSON form; refused
        raise _NoJson
    return v


class _NoJson(Exception):
    pass


def _key(k):
    if isinstance(k, (dict, list, tuple)):
        raise _NoJson
    return json.loads(json.dumps({k: 0})).popitem()[0] if not isinstance(k, str) else k


def pyyaml(text: str):
    try:
        return _json_ready(yaml.load(text, Loader=_Loader))
    except (yaml.YAMLError, _NoJson):
        return REFUSED


@pytest.fixture(scope="session")
def cli() -> Path:
    subprocess.run(["cargo", "build", "-q", "-p", "llm-router-cli"], cwd=REPO, check=True, timeout=900)
    return BIN


def ours(cli: Path, text: str, tmp: Path):
    path = tmp / "config.yaml"
    path.write_bytes(text.encode("utf-8"))
    proc = subprocess.run([str(cli), "check", "--print-json", "--allow-missing-env", str(path)],
                          capture_output=True, text=True, timeout=30)
    if not proc.stdout.strip() or any(m in proc.stderr for m in READ_ERRORS):
        return REFUSED, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def same(a, b) -> bool:
    """Equal with types (bool, int, float, str, None are distinct) and key order (the tool keeps PyYAML's)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def check(cli: Path, text: str, tmp: Path):
    want = pyyaml(text)
    got, stderr = ours(cli, text, tmp)
    assert same(want, got), f"document:\n{text!r}\nPyYAML: {want!r}\nllm-router: {got!r}\n{stderr}"


# Hand-written shapes of real-world LiteLLM configs.
SHAPES: dict[str, str] = {
    "flow_list_closing_at_key_indent": 'router_settings:\n  fallbacks: [\n    {"a": ["b"]}\n  ]\n',
    "flow_list_closing_at_column_0": 'router_settings:\n  fallbacks: [\n    {"a": ["b"]}\n]\n',
    "flow_list_closing_deeper": 'router_settings:\n  fallbacks: [\n    {"a": ["b"]}\n      ]\n',
    "flow_items_at_key_indent": 'router_settings:\n  fallbacks: [\n  {"a": ["b", "c"]},\n  {"d": ["e"]}\n  ]\n',
    "flow_after_flow_item": 'x:\n    m:\n    - {a: {b: 0}, c: 1}\n    - {\n    t: 1\n      }\n',
    "flow_comment_then_bracket_at_0": "a: {\n  'single': [[]],  # note\n}\n",
    "quoted_continuation_unindented": 'a:\n  b: "x\ny \\"z\\""\n  c: \'it\'\'s\n more\'\n  d: "p\n\n q"\n',
    "flow_map_across_lines": 'litellm_settings:\n  cache_params: {\n    type: redis,\n    ttl: 600\n  }\n',
    "flow_in_list_item": 'model_list:\n  - model_name: a\n    litellm_params: {\n      model: openai/a,\n      api_key: os.environ/K\n    }\n',
    "flow_comments_inside": 'router_settings:\n  fallbacks: [  # groups\n    {"a": ["b"]},  # first\n    # a whole-line comment\n    {"c": ["d"]}\n  ]\n',
    "flow_trailing_comma": 'a: [1, 2, 3,]\nb: {x: 1, y: 2,}\n',
    "flow_nested_across_lines": 'a: {b: [1,\n  2], c: {d:\n  e}}\n',
    "flow_quoted_across_lines": 'a: ["one\n  two", \'three\n  four\']\n',
    "anchors_merge": 'x: &d {api_key: os.environ/K, timeout: 30}\nmodel_list:\n  - model_name: a\n    litellm_params:\n      <<: *d\n      timeout: 10\n',
    "merge_list": 'a: &a {x: 1, y: 2}\nb: &b {y: 3, z: 4}\nc:\n  <<: [*a, *b]\n  x: 9\n',
    "merge_list_order": 'a: &a {x: 1, y: 2}\nb: &b {y: 3, z: 4}\nc:\n  w: 0\n  <<: [*a, *b]\n  v: 9\n',
    "merge_twice": 'a: &a {x: 1}\nb: &b {x: 2, y: 1}\nc:\n  <<: *a\n  <<: *b\n',
    "alias_scalar_and_list": 'k: &k os.environ/KEY\nl: &l [1, 2]\nm: {key: *k, list: *l}\n',
    "literal_block": 'general_settings:\n  prompt: |\n    line one\n    line two\n\n  other: 1\n',
    "folded_block": 'a: >\n  folded\n  text\n\n  para\nb: >-\n  stripped\nc: |+\n  kept\n\nd: 1\n',
    "block_indent_indicator": 'a: |2\n    indented\n  b\n',
    "quoted_keys": '"model_list": []\n\'router_settings\': {"num_retries": 2}\n"a b": 1\n',
    "environ_strings": 'model_list:\n  - model_name: a\n    litellm_params:\n      model: azure/x\n      api_base: os.environ/AZURE_API_BASE\n      api_key: "os.environ/AZURE_API_KEY"\n',
    "tab_after_value": 'a: 1\t\nb: x\t# comment\nc: [1,\t2]\n',
    "crlf": 'model_list:\r\n  - model_name: a\r\n    litellm_params:\r\n      model: openai/a\r\n',
    "crlf_block_scalar": 'a: |\r\n  x\r\n  y\r\nb: 1\r\n',
    "bom": '\ufeffmodel_list: []\nrouter_settings: {num_retries: 1}\n',
    "document_start": '---\na: 1\n',
    "document_end": 'a: 1\n...\n',
    "document_start_end": '--- \na: 1\n...\n',
    "trailing_document_start": 'a: 1\n---\n',
    "empty_values": 'a:\nb: \nc: {}\nd: []\ne: ""\nf:\n  - \n  -\n',
    "nulls": 'a: ~\nb: null\nc: Null\nd: NULL\ne: nil\n',
    "booleans": 'a: yes\nb: no\nc: on\nd: off\ne: True\nf: FALSE\ng: y\nh: n\ni: Yes\nj: oFF\n',
    "numbers": 'a: 1e3\nb: 0x10\nc: 010\nd: 1_000\ne: .5\nf: -.5\ng: +1\nh: 1.0e+3\ni: 0b11\nj: 1:30\nk: 09\nl: 0o17\nm: 1.\nn: -0\no: 3.0\np: 12e03\nq: 1_0.5\n',
    "big_numbers": 'a: 123456789012345678901234567890\nb: 1.7976931348623157e+308\n',
    "floats_no_json": 'a: .inf\n',
    "nan": 'a: .NaN\n',
    "dates": 'a: 2024-02-01\nb: 2001-12-14t21:59:43.10-05:00\nc: "2024-02-01"\nd: 2024-2-1\n',
    "duplicate_top": 'model_list: [1]\nrouter_settings: {}\nmodel_list: [2]\n',
    "duplicate_nested": 'a:\n  b: 1\n  c: 2\n  b: 3\nd: {x: 1, x: 2}\n',
    "numeric_keys": '1: a\n2.5: b\nfalse: c\n~: d\n0x10: e\n',
    "colon_in_values": 'a: http://host:8080/v1\nb: "x: y"\nc: a:b\nd: 10:20:30\n',
    "hash_in_values": 'a: x#y\nb: x #y\nc: "x #y"\n',
    "special_strings": "a: 'it''s'\nb: \"tab\\tnew\\nline \\u00e9\"\nc: -x\nd: '@x'\ne: ~x\n",
    "multiline_plain": 'a: one\n  two\n  three\nb: x\n',
    "list_of_lists": 'a:\n- - 1\n  - 2\n- - 3\n',
    "seq_at_key_indent": 'model_list:\n- model_name: a\n  litellm_params:\n    model: openai/a\n',
    "explicit_keys": '? a\n: 1\n? b\n',
    "tags": 'a: !!str 1\nb: !!int "2"\nc: !!float 3\nd: !!bool yes\ne: !!null ""\n',
    "non_specific_tag": 'a: ! "12"\nb: ! yes\nc: ! 1.5\n',
    "value_key": '=: 1\na: "="\n',
    "value_key_as_value": 'a: =\n',
    "top_level_list": '- a\n- b: 1\n',
    "top_level_scalar": 'just text\n',
    "empty_file": '',
    "only_comment": '# nothing\n',
    "unicode": 'a: "ünïcødé"\nb: 日本\nc: "\\U0001F600"\n',
    "invalid_indent": 'a: 1\n b: 2\n',
    "unclosed_flow": 'a: [1, 2\n',
    "bad_flow_indent_block_mapping": 'a:\n  b: [\n1]\n',
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_real_world_shapes_read_as_pyyaml_reads_them(cli, tmp_path, name):
    check(cli, SHAPES[name], tmp_path)


def test_true_and_1_keys(cli, tmp_path):
    """Kept on purpose: Python's True == 1, so PyYAML merges keys `1` and `true` into one (`{1: "b"}`); the tool
    keeps both, as JSON spells them (`"1"`, `"true"`). No LiteLLM setting has such keys."""
    assert pyyaml("1: a\ntrue: b\n") == {"1": "b"}
    got, _ = ours(cli, "1: a\ntrue: b\n", tmp_path)
    assert got == {"1": "a", "true": "b"}


def test_kept_divergences(cli, tmp_path):
    # `!!binary`: PyYAML gives bytes (no JSON form); the tool keeps the base64 text.
    assert ours(cli, "a: !!binary aGVsbG8=\n", tmp_path)[0] == {"a": "aGVsbG8="}
    # `{b` / `: 1}`: PyYAML refuses a flow mapping's implicit key that spans lines; the tool reads it.
    assert pyyaml("a: {b\n: 1}\n") == REFUSED
    assert ours(cli, "a: {b\n: 1}\n", tmp_path)[0] == {"a": {"b": 1}}


# Generated shapes.
PLAIN = ["gpt-4o", "openai/gpt-4o", "os.environ/OPENAI_API_KEY", "http://localhost:4000/v1", "simple-shuffle",
         "yes", "No", "on", "OFF", "True", "false", "~", "null", "0", "17", "-3", "010", "0x1f", "1_000", "1e3", "1.5",
         ".5", "1.0e+3", "1:30", "2024-02-01", "09", "y", "a b c", "x#y", "a:b", "-x", "1.2.3", "3.", "+7", "0b10"]
QUOTED = ['"x"', "'y'", '"a: b"', "'it''s'", '"1"', '"yes"', '"tab\\tx"', "''", '"#not a comment"', '"\\u00e9"']
KEYS = ["model_name", "litellm_params", "model", "api_key", "timeout", "rpm", "a", "b-c", "x_y", '"quoted key"',
        "'single'", "2", "yes", "null"]  # not 1 and yes together: Python's True == 1 (see test_true_and_1_keys)


def gen_scalar(r: random.Random, flow: bool) -> str:
    s = r.choice(PLAIN + QUOTED)
    if flow and s in ("x#y", "a:b"):  # plain scalars with these need care in flow context; keep them quoted
        s = f'"{s}"'
    return s


def gen_flow(r: random.Random, depth: int) -> str:
    if depth >= 3 or r.random() < 0.4:
        return gen_scalar(r, True)
    n = r.randint(0, 3)
    if r.random() < 0.5:
        return "[" + ", ".join(gen_flow(r, depth + 1) for _ in range(n)) + "]"
    keys = r.sample(KEYS, n)
    return "{" + ", ".join(f"{k}: {gen_flow(r, depth + 1)}" for k in keys) + "}"


def gen_flow_multiline(r: random.Random, indent: int) -> str:
    """A flow collection over several lines; items and the closing bracket at varying indents."""
    seq = r.random() < 0.5
    open_, close = ("[", "]") if seq else ("{", "}")
    keys = r.sample(KEYS, r.randint(1, 3))
    lines = [open_ + (" # opened" if r.random() < 0.2 else "")]
    for i, k in enumerate(keys):
        item = gen_flow(r, 1) if seq else f"{k}: {gen_flow(r, 1)}"
        pad = " " * max(0, indent + r.choice([0, 1, 2, 4]))
        comma = "," if i < len(keys) - 1 or r.random() < 0.3 else ""
        comment = "  # note" if r.random() < 0.2 else ""
        lines.append(pad + item + comma + comment)
    lines.append(" " * max(0, indent + r.choice([0, 2])) + close)
    return "\n".join(lines)


def gen_block(r: random.Random, indent: int, depth: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if r.random() < 0.55:
        for k in r.sample(KEYS, r.randint(1, 4)):
            out.extend(gen_entry(r, pad + k + ":", indent, depth))
    else:
        for _ in range(r.randint(1, 3)):
            out.extend(gen_entry(r, pad + "-", indent, depth))
    return out


def gen_entry(r: random.Random, head: str, indent: int, depth: int) -> list[str]:
    roll = r.random()
    if depth >= 3 or roll < 0.35:
        tail = "\t" if r.random() < 0.05 else (" # c" if r.random() < 0.1 else "")
        return [f"{head} {gen_scalar(r, False)}{tail}"]
    if roll < 0.5:
        return [f"{head} {gen_flow(r, 1)}"]
    if roll < 0.65:
        return [f"{head} " + gen_flow_multiline(r, indent + r.choice([0, 2]))]
    if roll < 0.7:
        return [f"{head} |", " " * (indent + 2) + "text line", " " * (indent + 2) + "[not flow]"]
    child = indent + r.choice([2, 4])
    if head.endswith(":") and r.random() < 0.3:
        child = indent  # a block list at its key's indentation
        body = gen_block(r, child, depth + 1)
        if not body[0].lstrip().startswith("-"):
            child = indent + 2
            body = gen_block(r, child, depth + 1)
        return [head] + body
    return [head] + gen_block(r, child, depth + 1)


def gen_document(r: random.Random) -> str:
    text = "\n".join(gen_block(r, 0, 0)) + "\n"
    roll = r.random()
    if roll < 0.05:
        text = text.replace("\n", "\r\n")
    elif roll < 0.08:
        text = "\ufeff" + text
    elif roll < 0.11:
        text = "---\n" + text + "...\n"
    return text


def test_generated_shapes_read_as_pyyaml_reads_them(cli, tmp_path):
    r = random.Random(20261201)
    failures = []
    for i in range(300):
        text = gen_document(r)
        want = pyyaml(text)
        got, stderr = ours(cli, text, tmp_path)
        if not same(want, got):
            failures.append(f"#{i}:\n{text}\nPyYAML: {want!r}\nllm-router: {got!r}\n{stderr}")
    assert not failures, f"{len(failures)} of 300 differ; first:\n" + "\n".join(failures[:3])
