"""Report phase: ``reports/`` (Markdown, HTML, metrics.json, figures) built from stage outputs."""
