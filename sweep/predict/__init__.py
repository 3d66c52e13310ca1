"""A step-time model fitted on the store: per class of operation, time = work / (efficiency x the node's roof).

features.py turns a config into work per class and a node (or a fingerprint file) into roofs; fit.py fits the
efficiencies by non-negative least squares and predicts with a leave-one-config-out interval; validate.py checks the
model on configs it did not see; cost.py turns predicted times into money; cli.py is `bench.py predict`;
report_section.py is the report's section. Nothing here imports Ray or the plans: it reads a store, as results/ does.
"""
