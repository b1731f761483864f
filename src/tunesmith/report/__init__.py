"""Plots and (in a later round) the HTML report of a run."""
