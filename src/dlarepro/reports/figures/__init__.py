"""The report's figures, one module each (discovered by :mod:`dlarepro.reports.registry`).

A module declares ``FIGURE = FigureSpec(name, number, section, caption, build, ...)``; ``build``
receives the context, the aggregate frames and the synthetic-data words and returns a matplotlib
``Figure`` (see :mod:`dlarepro.reports.figurekit`). A figure may declare a data file that
``report aggregate`` writes (``figure4.csv``, DVC plots data). Methods are named and coloured from
:mod:`dlarepro.methods` only, and every method that has runs is drawn.
"""
