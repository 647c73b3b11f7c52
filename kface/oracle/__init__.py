"""The identity oracle: the timm classifier that judges generated faces (RCA).

``model`` builds it (timm, small-input stem) and wraps it with its preprocessing; ``recipe`` is the paper's
training protocol; ``store`` saves, loads and describes it. The names below are its public API (and what
model cards written by earlier kface versions import: ``from kface.oracle import load_oracle``).
"""

from .model import Oracle, create_classifier, oracle_config, predict_logits, use_small_stem
from .store import comparison_table, load_oracle, save_oracle, write_model_card

__all__ = ["Oracle", "comparison_table", "create_classifier", "load_oracle", "oracle_config", "predict_logits",
           "save_oracle", "use_small_stem", "write_model_card"]
