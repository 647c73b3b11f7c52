"""Evaluation: what evaluate.py (and train_oracle.py's test report) compute, as layered pure functions.

- ``classification``: confusion matrix, per-class P/R/F1, ECE, the oracle's summary of one split;
- ``rca``: Relative Classification Accuracy, class RCA and their bootstrap intervals;
- ``features``: oracle features and logits, feature statistics, the Fréchet distance;
- ``visual_metrics``: FID, KID, Inception Score, LPIPS diversity (networks checked offline first);
- ``shift``: low-level statistics of an image set (colour, centre, border, high-frequency energy);
- ``matching``: real images degraded toward the generated set's statistics, and the two-sided nuisance match;
- ``nuisance``: the oracle on the degraded and matched sets, and nuisance-matched RCA;
- ``report``, ``tables`` and ``plots``: metrics.json, report.md and its tables, the model-card entries, the figures.
"""
