"""Evaluation: what evaluate.py (and train_oracle.py's test report) compute, as layered pure functions.

- ``classification``: confusion matrix, per-class P/R/F1, ECE, the oracle's summary of one split;
- ``rca``: Relative Classification Accuracy, class RCA and their bootstrap intervals;
- ``features``: oracle features and logits, feature statistics, the Fréchet distance;
- ``visual_metrics``: FID, KID, Inception Score, LPIPS diversity (networks checked offline first);
- ``nuisance``: low-level shift between generated and real images, and nuisance-matched RCA;
- ``report`` and ``plots``: metrics.json, report.md, the model-card entries and the figures.
"""
