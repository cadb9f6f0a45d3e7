"""Figures and reports: training curves, evaluation figures, job reports."""
