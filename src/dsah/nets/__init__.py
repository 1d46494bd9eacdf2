"""Networks: the label auto-encoder, image backbones and the hash head."""
