"""The case-series analysis: the published series' Table 1 and outcome, computed from live data."""
