"""One request's sampler chain in llama.cpp's own samplers, for the batched path.

The single-sequence path samples through llama-cpp-python's ``Llama`` instead; both follow
the same :class:`GenerationParams`.
"""

from __future__ import annotations

from typing import Any

import llama_cpp
import numpy as np

from .._types import GenerationParams

__all__ = ["sampler_chain"]

# Bias at or beyond +-100 means force/ban (OpenAI); finite, so softmax stays defined.
_FORCE = 1e9
_PENALTY_LAST_N = 64


def sampler_chain(params: GenerationParams, tokens: list[int], n_vocab: int) -> Any:
    """A new chain (free it with ``llama_sampler_free``): logit bias, penalties over the last
    64 tokens (the prompt's included), then greedy at temperature 0, else top-k, top-p,
    min-p, temperature and a seeded draw."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    if params.logit_bias:
        items = (llama_cpp.llama_logit_bias * len(params.logit_bias))()
        for item, (token, bias) in zip(items, params.logit_bias.items(), strict=True):
            item.token = token
            item.bias = float(np.sign(bias) * _FORCE) if abs(bias) >= 100 else float(bias)
        add(chain, llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(items), items))
    add(
        chain,
        llama_cpp.llama_sampler_init_penalties(
            n_vocab,
            _PENALTY_LAST_N,
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
        ),
    )
    temp = params.temperature
    if temp <= 0.0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
    else:
        seed = params.seed if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
        add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
        add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(temp))
        add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    for token in tokens[-_PENALTY_LAST_N:]:  # the penalties look back into the prompt
        llama_cpp.llama_sampler_accept(chain, token)
    return chain
