"""Numba kernels for Hamming-space search (installed as hashsearch.kernels)."""
