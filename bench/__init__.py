"""Benchmarks (not tests): the gateway's intake measured against the DESIGN §9 floor."""
