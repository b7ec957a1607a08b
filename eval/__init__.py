"""Research, evaluation and training code: the benches behind RESEARCH.md and the README's
tables, the scripts that make the committed model files (the gender classifier's weights, the
speaker filter's cohort) and the test helpers that build cases with a known truth.

Not part of the wheel (pyproject's ``[tool.setuptools] packages`` leaves it out): it runs from a
source checkout, and no runtime package imports it — but ``malmoi eval …``, which says so when
it is missing (tests/test_imports.py checks both)."""
