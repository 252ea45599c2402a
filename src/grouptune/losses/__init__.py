"""Loss functions of grouptune: pure functions of log-probs, masks and rewards.

Each returns ``(loss, metrics)``: a float32 scalar tensor and a dict of python floats. One
small file per family; the aggregation rules (and their length bias) live in
:mod:`grouptune.losses.aggregation`.
"""

from grouptune.losses.aggregation import aggregate
from grouptune.losses.asft import asft_loss, vocab_kl
from grouptune.losses.chord import chord_loss, chord_mu
from grouptune.losses.gft import gft_loss
from grouptune.losses.gift import gift_loss
from grouptune.losses.grpo import grpo_loss
from grouptune.losses.luffy import luffy_loss
from grouptune.losses.preference import dpo_loss, una_loss
from grouptune.losses.psft import psft_loss
from grouptune.losses.sft import dft_loss, sft_loss

__all__ = [
    "aggregate", "asft_loss", "chord_loss", "chord_mu", "dft_loss", "dpo_loss", "gft_loss", "gift_loss",
    "grpo_loss", "luffy_loss", "psft_loss", "sft_loss", "una_loss", "vocab_kl",
]  # fmt: skip
