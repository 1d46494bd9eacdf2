"""Networks: image backbones and the hash head (backbones), the label auto-encoder (lae), and the fixed
feature extractors of the classic methods (features)."""
