"""The one rendering path: a run becomes a format-neutral view once (view.py, from the rows and the verdict,
with the generic tables of tables.py and each suite's own), and back-ends only format that view:
terminal.py (rich, `show`), html.py + page.py (`report`), export.py (`export`: csv/json/md/latex/html) and
figures.py (PNG plots: the run's roofline, then each suite's own)."""
