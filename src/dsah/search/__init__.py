"""Search: the Hamming index (index), images added after training (additions), a trained model read back
(model), new images into codes (image_encoder), and the HTTP service (serve)."""
