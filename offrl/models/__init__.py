"""Learned dynamics models and what model-based RL does with them.

Every model offers one interface (`DynamicsModel` in `dynamics.py`): the Gaussian prediction of (delta s, r) from
a window of real steps, its training loss, and one roll-out step with its uncertainty penalty. offrl.algos.dynamics
fits any of them with hold-out early stopping, on windows from offrl.data.windows; `rollouts.py` rolls a policy
out in one and keeps the model transitions. The models: ADM's any-step GRU (`any_step.py`) and MOPO/MBPO's MLP ensemble (`ensemble.py`).
"""
