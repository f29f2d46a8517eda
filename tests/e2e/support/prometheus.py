"""The Prometheus text format as Envoy's admin `/stats/prometheus` writes it: a strict parser (any line that is
neither a comment nor a sample fails the test) and a scrape helper."""

from __future__ import annotations

import re
import urllib.request
from typing import Optional

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse_labels(text: str) -> dict:
    labels, pos = {}, 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        assert m, f"bad label set {text!r} at {pos}"
        labels[m.group(1)] = re.sub(r"\\(.)", lambda e: {"n": "\n"}.get(e.group(1), e.group(1)), m.group(2))
        pos = m.end()
    return labels


def parse_prometheus(text: str) -> list:
    """[(name, labels, value)] for every sample line; comments skipped; any other line is an error."""
    samples = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        samples.append((m.group(1), parse_labels(m.group(2) or ""), float(m.group(3))))
    return samples


class Scrape:
    def __init__(self, text: str):
        self.text = text
        self.samples = parse_prometheus(text)

    def series(self, name: str) -> list:
        return [(labels, v) for n, labels, v in self.samples if n == name]

    def value(self, name: str, **labels) -> Optional[float]:
        """The one sample of `name` with exactly these labels (None if absent)."""
        found = [v for n, l, v in self.samples if n == name and l == labels]
        assert len(found) <= 1, f"{name}{labels} appears {len(found)} times"
        return found[0] if found else None

    def count(self, name: str, **labels) -> int:
        """A counter's or gauge's value, 0 when the series does not exist (never incremented)."""
        v = self.value(name, **labels)
        return 0 if v is None else int(v)

    def __repr__(self) -> str:
        return "\n".join(line for line in self.text.splitlines() if "llm_router_" in line)


def scrape(envoy) -> Scrape:
    """`envoy`: anything with an `admin_url`."""
    with urllib.request.urlopen(envoy.admin_url + "/stats/prometheus", timeout=5) as r:
        return Scrape(r.read().decode())
