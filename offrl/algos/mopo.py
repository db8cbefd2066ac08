"""MOPO (Yu et al., "MOPO: Model-based Offline Policy Optimization", NeurIPS 2020; code tianheyu927/mopo, and
OfflineRL-Kit's re-implementation, yihaosun1124/OfflineRL-Kit) and its online counterpart MBPO (Janner et al.
2019): SAC on real and model transitions from a probabilistic MLP ensemble (offrl.models.ensemble), offline with
reward r - penalty_coef * (largest predicted std norm over the members). The loop: offrl.algos.model_based_sac.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from offrl.algos.dynamics import EnsembleDynamics
from offrl.algos.model_based_sac import ModelBasedSAC, OnlineModelBasedSAC


class MOPO(ModelBasedSAC):
    default_name = "mopo"
    dynamics_fit_class = EnsembleDynamics

    def __init__(
        self,
        dynamics_hidden_dims: Sequence[int] = (200, 200, 200, 200),
        dynamics_members: int = 7,
        dynamics_elites: int = 5,
        dynamics_weight_decay: Sequence[float] | None = None,
        **kwargs: Any,
    ):
        """
        Args:
            dynamics_hidden_dims: widths of every member's MLP.
            dynamics_members, dynamics_elites: ensemble size, and the members roll-outs sample from.
            dynamics_weight_decay: MOPO's per-layer L2 coefficients on the members' weights, one per linear layer
                from input to output (None: no decay).
            (offrl.algos.dynamics.EnsembleDynamics checks and fits them.)
            **kwargs: the roll-out, model-fitting and SAC settings of offrl.algos.model_based_sac.ModelBasedSAC.
        """
        super().__init__(**kwargs)


class MBPO(OnlineModelBasedSAC, MOPO):
    """MBPO: MOPO's ensemble online, unpenalised (offrl.algos.model_based_sac.OnlineModelBasedSAC)."""

    default_name = "mbpo"
