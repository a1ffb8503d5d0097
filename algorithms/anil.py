"""`anil`: Almost No Inner Loop (Raghu et al. 2020): MAML whose inner loop adapts the classifier head alone; the
backbone is meta-learned by the outer loop only. Second order by default (``first_order`` drops those terms)."""
from __future__ import annotations

from algorithms.base import register_learner
from algorithms.maml import MAML


@register_learner("anil")
class ANIL(MAML):
    """ANIL: MAML with only the head in the inner loop (second order; first_order option)."""

    def adapted_names(self) -> set[str]:
        return {name for name, _ in self.model.named_parameters() if name.startswith("head.")}
