"""Measurements: the benchmarks (make bench), the soak (make soak), paced live streams, perf_analyzer
scenarios and the GPU stage benchmark. They use the operator tools (``synctalk_ops``,
``synctalk_build``), never the reverse."""
