"""Experiments: DVC commands and queued experiments for the flows (commands), promotion of a better model
(promotion), the comparison table across methods and lengths (compare), and the ablation and sweep studies (studies)."""
