"""Training: the one loop of the alternating optimization (loop), the label auto-encoder's training (lae),
data-parallel runs (distributed), augmentation, where images live while training (placement), checkpoints,
and encoding images into codes (encode)."""
