"""Token sources: ``synthetic`` (default), ``hf`` (transformers) and ``openai``."""

from __future__ import annotations

from server.settings import Settings
from server.sources.base import Finish, GenerationRequest, TokenSource
from server.sources.synthetic import SyntheticSource

__all__ = ["Finish", "GenerationRequest", "TokenSource", "build_sources"]


def build_sources(settings: Settings) -> dict[str, TokenSource]:
    """The enabled sources, by name. Heavy imports happen only for enabled sources."""
    sources: dict[str, TokenSource] = {
        "synthetic": SyntheticSource(
            ttft_ms=settings.ttft_ms,
            tokens_per_s=settings.tokens_per_s,
            jitter=settings.jitter,
            seed=settings.seed,
            max_ttft_ms=settings.max_ttft_ms,
            max_tokens_per_s=settings.max_tokens_per_s,
        )
    }
    if "hf" in settings.enabled_sources:
        from server.sources.hf import HFSource

        sources["hf"] = HFSource(
            settings.hf_model,
            device=settings.hf_device,
            max_concurrent=settings.hf_max_concurrent,
        )
    if "openai" in settings.enabled_sources:
        from server.sources.openai import OpenAISource

        sources["openai"] = OpenAISource(
            model=settings.openai_model,
            base_url=settings.base_url,
            api_key=settings.api_key,
            timeout=settings.openai_timeout_s,
            max_tokens_field=settings.openai_max_tokens_field,
        )
    return sources
