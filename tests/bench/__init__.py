"""The benchmark behind ``scripts/bench``: measurements, delay relay, stand-in browser, report."""
