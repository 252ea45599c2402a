"""grouptune: group-based post-training (GFT, GIFT and their baselines) in one loop.

The package ``__init__`` stays light on purpose: import the pieces you need, e.g.
``from grouptune.losses import gift_loss``.
"""

__version__ = "0.1.0"
