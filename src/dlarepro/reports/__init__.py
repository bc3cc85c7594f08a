"""Reports of a profile's runs, or of run folders trained by hand (``dla-repro report ...``):

- :mod:`.aggregate`: ``results/<name>/{runs,summary,problems}.csv``, ``headline.json`` and the
  figures' data files (``figure4.csv``), through the column schemas of :mod:`.schema`;
- :mod:`.tablekit` and the table modules of :mod:`.tables`: ``reports/<name>/tables/*.tex``;
- :mod:`.figurekit` and the figure modules of :mod:`.figures`: ``reports/<name>/figures/*.{pdf,png}``;
- :mod:`.paper_tex`: ``reports/<name>/paper.tex`` and ``paper.pdf``;
- :mod:`.steps`: the steps in order, handing the aggregate frames along (``report all``).

:mod:`.registry` discovers the tables and figures; :mod:`.context` and :mod:`.index` say which
runs a report describes. Every output is written atomically and only when its bytes change.
Nothing is imported here: building the command line must not import pandas or matplotlib.
"""
