"""OpenAI-compatible simulator: limits, latency, faults, and a record of every request."""
