"""pipeline: declarative batch jobs against OpenAI-compatible APIs."""

__version__ = "0.1.0"
