"""The ``transformers`` rollout engine: ``model.generate`` on the training model itself."""

from __future__ import annotations

import torch

from grouptune.rollout import Generations, sample


class TransformersEngine:
    """Samples with the policy being trained (no copy: there are no weights to sync).

    Prompts go through ``generate`` in chunks of ``batch_size`` (0 = all at once). With
    ``seeds``, each chunk re-seeds torch with its first request's seed: a chunk that holds the
    rollouts of one optimizer step of one process is then sampled identically by one process or
    N (the loop lays its requests out so). Without, sampling continues torch's global stream.
    """

    name = "transformers"

    def __init__(self, model, *, pad_id: int, eos_ids: list[int], batch_size: int = 0, synced_gpus: bool = False):
        self.model, self.pad_id, self.eos_ids = model, pad_id, eos_ids
        self.batch_size, self.synced_gpus = batch_size, synced_gpus

    def sync_weights(self, model) -> float:
        """Nothing to do: this engine samples with the policy itself. Returns the seconds spent (0)."""
        return 0.0

    def sleep(self) -> None:
        """Nothing to free: the policy is the engine."""

    def close(self) -> None:
        """Nothing to shut down."""

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        seeds: list[int] | None = None,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        greedy: bool = False,
    ) -> Generations:
        chunk = self.batch_size or max(len(prompts), 1)
        out = Generations([], [])
        was_training = self.model.training
        self.model.eval()
        for s in range(0, len(prompts), chunk):
            if seeds is not None:
                torch.manual_seed(seeds[s])
            ids, cut = sample(
                self.model, prompts[s : s + chunk], pad_id=self.pad_id, eos_ids=self.eos_ids,
                max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, greedy=greedy,
                synced_gpus=self.synced_gpus,
            )  # fmt: skip
            out.token_ids += ids
            out.truncated += cut
        self.model.train(was_training)
        return out
