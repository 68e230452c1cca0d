"""One widget builder per chapter. The callbacks are plain functions that return
figures, so tests can call them without a browser; only the builders touch ipywidgets."""
