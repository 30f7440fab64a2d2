"""Hypothesis profiles for the fuzz tests.

``ci`` (the default): a bounded, reproducible run (fixed seed via ``derandomize``,
no deadline, so a slow shared machine cannot make it flaky).
``long``: many more examples, random seeds, for a local hunt::

    HYPOTHESIS_PROFILE=long python -m pytest -q tests/fuzz
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "long", max_examples=5000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
