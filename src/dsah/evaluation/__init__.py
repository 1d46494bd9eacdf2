"""Evaluation: retrieval metrics (metrics) on the compiled ranking kernel (ranking), the evaluate step
(evaluate), the HTML report (report, its page a Jinja2 template in templates/), its figures (figures), markdown
tables (markdown) and the paper's published rows (paper)."""
