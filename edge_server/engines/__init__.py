"""Target engines behind one interface; ``make_engine`` picks one from the configuration."""

from __future__ import annotations

from pathlib import Path

from edge_server.config import EdgeConfig
from edge_server.engines.base import TargetEngine
from tandem.models import DEFAULT_MODEL_NAME, default_data_dir, load_prepared


def make_engine(config: EdgeConfig) -> TargetEngine:
    model = config.model or _prepared_target(config)
    if config.engine == "vllm":
        from edge_server.engines.vllm_engine import VllmTargetEngine

        options = config.vllm
        return VllmTargetEngine(
            model, config.max_context, options.top_n, options.block_size, options.enforce_eager, options.kv_cache_gib
        )
    from edge_server.engines.llamacpp_engine import LlamaCppTargetEngine

    return LlamaCppTargetEngine(model, config.max_context, config.llamacpp.threads, config.llamacpp.slots)


def _prepared_target(config: EdgeConfig) -> Path:
    prepared = load_prepared((config.data_dir or default_data_dir()) / "models" / DEFAULT_MODEL_NAME)
    return prepared.target_hf if config.engine == "vllm" else prepared.target_gguf
