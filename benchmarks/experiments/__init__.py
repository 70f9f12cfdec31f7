"""Experiment drivers: training and scoring runs through main.py and
evaluate.py, printed as tables (scripts)."""
