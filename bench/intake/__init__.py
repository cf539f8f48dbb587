"""Referral intake: the gateway against the DESIGN §9 floor, side by side (``bench/intake/bench_intake.py``)."""
