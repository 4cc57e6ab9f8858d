"""Helpers experiments build their studies from: classifiers, comparisons, recorders, forecasts, text models, plots."""
