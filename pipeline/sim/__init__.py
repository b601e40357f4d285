"""OpenAI-compatible simulator: limits, latency, faults, and a record of every request."""

from .answers import sim_chat_text
from .audio import sim_transcript
from .config import FaultRule, KeyLimits, RequestRecord, SimConfig
from .embeddings import sim_embedding
from .server import Simulator, serve
from .thread import SimulatorThread
from .tokens import chat_prompt_tokens, count_tokens

__all__ = [
    "FaultRule",
    "KeyLimits",
    "RequestRecord",
    "SimConfig",
    "Simulator",
    "SimulatorThread",
    "chat_prompt_tokens",
    "count_tokens",
    "serve",
    "sim_chat_text",
    "sim_embedding",
    "sim_transcript",
]
