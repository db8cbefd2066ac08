"""Dataset recipes that train an agent to collect their data (D4RL's medium-replay: an online SAC run's replay
buffer). They use the training stack (algos, callbacks) on top of offrl.data, so they sit above it: the data
catalog names them by module (offrl.data.catalog), and the data layer never imports them."""
