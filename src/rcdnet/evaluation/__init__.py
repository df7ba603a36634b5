"""Evaluation: metrics with bootstrap confidence intervals, operating points, figures and reports."""
