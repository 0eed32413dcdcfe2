"""``bfm-eval``: the paper's verification accuracy protocol (10-fold thresholds, matching cases, mask accuracy)."""
