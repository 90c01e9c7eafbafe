"""Statistics: site kernels and coordinator solvers side by side, one package per statistic."""
