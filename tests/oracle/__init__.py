"""Independent oracles: other projects' evaluators that compiled output is checked against."""
