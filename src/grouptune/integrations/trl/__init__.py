"""GIFT and GFT as TRL trainers: a TRL user switches from GRPO by changing one import.

    from trl import GRPOConfig, GRPOTrainer                               # GRPO
    from grouptune.integrations.trl import GIFTConfig, GIFTTrainer        # GIFT
    from grouptune.integrations.trl import GFTConfig, GFTTrainer          # GFT

The trainers subclass TRL's ``GRPOTrainer`` (tested with ``trl>=1.16,<1.17``) and keep all of
it -- generation (transformers, continuous batching or vLLM), reward functions and reward
models, PEFT, DeepSpeed/FSDP, logging, checkpoints -- except the few methods below. The math
is ``grouptune.advantages`` and ``grouptune.losses``, the same functions the native loop calls.

GIFTTrainer (docs/methods.md#gift) overrides
    _compute_loss                    ``gift_loss`` instead of the clipped-ratio loss: no ratio,
                                     no clipping, no KL.
    _generate_and_score_completions  adds the explicit rewards to the batch (GIFT normalises the
                                     rewards itself; TRL only hands on advantages) and the
                                     sampling policy's log-probs for reference ``old`` (TRL
                                     skips them when it can prove it needs none).
    _prepare_inputs                  shuffles whole groups instead of rows before TRL splits the
                                     generation batch into micro-batches: z is normalised within
                                     a group at the current parameters, so a micro-batch must
                                     hold whole groups.
    __init__                         turns TRL's reference model on for reference ``initial``
                                     (TRL only builds one when its KL coefficient is non-zero).

GFTTrainer (docs/methods.md#gft) overrides
    _generate_single_turn            samples only the ``M`` on-policy members of each group; the
                                     first ``K`` members are the data set's expert demonstration
                                     and teacher responses, tokenized.
    _generate_and_score_completions  advantages over the whole hybrid group from the rewards
                                     TRL's reward functions gave every member
                                     (docs/methods.md#group-advantages).
    _compute_loss                    ``gft_loss``: rectified, advantage-weighted token-mean.

Both also extend ``_calculate_rewards`` to keep the summed, weighted rewards of the whole batch.

Modules: ``configs`` (GIFTConfig, GFTConfig), ``trainers`` (the trainers).
"""

from __future__ import annotations

import warnings
from importlib import metadata

from packaging.version import Version

TRL_REQUIREMENT = ">=1.16,<1.17"
_TRL_MIN, _TRL_MAX = Version("1.16"), Version("1.17")

try:
    import trl  # noqa: F401
except ImportError as err:
    try:
        _found = f"trl {metadata.version('trl')} is installed but could not be imported"
    except metadata.PackageNotFoundError:
        _found = "trl is not installed"
    raise ImportError(
        f"grouptune.integrations.trl needs TRL (trl{TRL_REQUIREMENT}); {_found}. "
        "Install it with: pip install grouptune[trl]"
    ) from err

if not _TRL_MIN <= Version(metadata.version("trl")) < _TRL_MAX:
    warnings.warn(
        f"grouptune.integrations.trl is tested with trl{TRL_REQUIREMENT}, found trl {metadata.version('trl')}: "
        "it overrides private GRPOTrainer methods that may have changed. Install a supported TRL with "
        "pip install grouptune[trl]",
        stacklevel=2,
    )

from grouptune.integrations.trl.configs import GFTConfig, GIFTConfig  # noqa: E402
from grouptune.integrations.trl.trainers import GFTTrainer, GIFTTrainer  # noqa: E402

__all__ = ["GFTConfig", "GFTTrainer", "GIFTConfig", "GIFTTrainer", "TRL_REQUIREMENT"]
