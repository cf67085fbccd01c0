"""Home of librknnrt_sim.so, the simulated NPU built from runtime_c/ at install time."""
