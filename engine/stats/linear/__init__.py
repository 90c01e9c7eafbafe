"""Linear regression: site kernels and the coordinator's solve."""
