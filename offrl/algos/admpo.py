"""ADMPO (Lin et al., "Any-step Dynamics Model Improves Future Predictions for Online and Offline Reinforcement
Learning", arXiv 2405.17031; official code HxLyn3/ADMPO): SAC on real and model transitions from the any-step
dynamics model (offrl.models.any_step), a GRU that predicts s_{t+1} from s_{t-k+1} and the k actions in between,
any k in 1..m.

- ADMPO-OFF (`ADMPOOffline`), MOPO-like: roll-outs start from m - 1 real steps of history; each step draws
  k ~ U{1..min(history, m)}; the reward is penalised by the disagreement of the predictions for k = 1..min(history,
  m) (`penalty_form`: "official", the code's, or "eq4", the paper's).
- ADMPO-ON (`ADMPOOnline`), MBPO-like: the same model refitted online, unpenalised roll-outs.

The loop they share with MOPO and MBPO: offrl.algos.model_based_sac.
"""

from __future__ import annotations

from typing import Any

from offrl.algos.dynamics import AnyStepDynamics
from offrl.algos.model_based_sac import ModelBasedSAC, OnlineRollouts, check_unpenalised
from offrl.errors import OffrlError
from offrl.objectives.dynamics import PENALTY_FORMS


class ADMPOOffline(ModelBasedSAC):
    default_name = "admpo_off"
    dynamics_fit_class = AnyStepDynamics

    def __init__(
        self,
        max_window: int = 5,
        penalty_form: str = "official",
        dynamics_hidden_dim: int = 200,
        dynamics_gru_layers: int = 3,
        dynamics_residual_blocks: int = 4,
        dynamics_dropout: float = 0.1,
        **kwargs: Any,
    ):
        """
        Args:
            max_window: m, the largest k of the any-step model.
            penalty_form: the uncertainty, "official" (spread of the means over k) or "eq4" (plus the variances).
            dynamics_hidden_dim, dynamics_gru_layers, dynamics_residual_blocks, dynamics_dropout: the any-step model
                (offrl.algos.dynamics.AnyStepDynamics fits it).
            **kwargs: the roll-out, model-fitting and SAC settings of offrl.algos.model_based_sac.ModelBasedSAC.
        """
        if penalty_form not in PENALTY_FORMS:
            raise OffrlError(f"model.penalty_form must be one of {PENALTY_FORMS}, got {penalty_form!r}")
        super().__init__(**kwargs)


class ADMPOOnline(ADMPOOffline):
    """ADMPO-ON: the any-step model online, unpenalised, on offrl.algos.model_based_sac.OnlineRollouts' schedule."""

    default_name = "admpo_on"

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
            **kwargs: ADMPOOffline's (model, roll-outs, SAC). Online roll-outs are unpenalised; rollout_every is unused.
        """
        check_unpenalised(penalty_coef)
        super().__init__(penalty_coef=0.0, **kwargs)
        self.schedule = OnlineRollouts(self.hparams.rollout_horizon, dynamics_every, min_rollout_horizon, horizon_ramp_start, horizon_ramp_end)
