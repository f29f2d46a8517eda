"""End-to-end test harness: mock LLM providers, an Envoy launcher and a tiny HTTP client.

Stdlib only, so that `scripts/demo` can use the mocks without installing anything but Envoy.
"""
