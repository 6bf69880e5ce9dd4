"""Hashing learners with a scikit-learn-like API: fit, then encode to packed codes."""
