"""Bridges to other training frameworks. Each lives in its own module and imports its framework
only when imported itself, so ``import grouptune`` never needs them:

- ``grouptune.integrations.trl``: ``GIFTTrainer`` and ``GFTTrainer`` for users of TRL's
  ``GRPOTrainer`` (``pip install grouptune[trl]``).
"""
