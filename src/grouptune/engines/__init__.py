"""Rollout engines other than ``transformers`` generation (``grouptune.rollout.sample``).

``grouptune.engines.vllm``: a vLLM engine colocated with the training process, which gets the
policy's weights in place after each optimizer step. Nothing here is imported by
``import grouptune``: vLLM is optional and heavy to import.
"""
