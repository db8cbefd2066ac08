"""MOPO (Yu et al., "MOPO: Model-based Offline Policy Optimization", NeurIPS 2020; code tianheyu927/mopo, and
OfflineRL-Kit's re-implementation, yihaosun1124/OfflineRL-Kit) and its online counterpart MBPO (Janner et al.
2019): SAC on real and model transitions from a probabilistic MLP ensemble (offrl.models.ensemble), offline with
reward r - penalty_coef * (largest predicted std norm over the members). The loop: offrl.algos.model_based_sac.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from offrl.algos.dynamics import EnsembleDynamics
from offrl.algos.model_based_sac import ModelBasedSAC, OnlineRollouts, check_unpenalised


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


class MBPO(MOPO):
    """MBPO: MOPO's ensemble online, unpenalised, on offrl.algos.model_based_sac.OnlineRollouts' schedule."""

    default_name = "mbpo"

    def __init__(
        self,
        dynamics_every: int = 250,
        min_rollout_horizon: int = 1,
        horizon_ramp_start: int = 20000,
        horizon_ramp_end: int = 100000,
        penalty_coef: float = 0.0,
        **kwargs: Any,
    ):
        """
        Args:
            dynamics_every: env steps between two model refits (each followed by a roll-out round).
            min_rollout_horizon: the roll-out horizon until horizon_ramp_start env steps.
            horizon_ramp_start, horizon_ramp_end: env steps over which the horizon grows to rollout_horizon.
            penalty_coef: 0: online roll-outs are unpenalised.
            **kwargs: MOPO's (model, roll-outs, SAC). Online roll-outs are unpenalised; rollout_every is unused.
        """
        check_unpenalised(penalty_coef)
        super().__init__(penalty_coef=0.0, **kwargs)
        self.schedule = OnlineRollouts(self.hparams.rollout_horizon, dynamics_every, min_rollout_horizon, horizon_ramp_start, horizon_ramp_end)
