"""Evaluation: retrieval metrics (metrics) on the compiled ranking kernel (ranking), the evaluate step
(evaluate), the HTML report (report), its figures (figures) and the paper's published rows (paper)."""
