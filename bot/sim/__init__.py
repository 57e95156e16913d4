"""The simulator: replay exchange, synthetic market, demo, report."""
