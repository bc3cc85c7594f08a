"""The report's tables, one module each (discovered by :mod:`dlarepro.reports.registry`).

A module declares ``TABLE = TableSpec(name, number, section, build, ...)``; ``build`` receives a
:class:`dlarepro.reports.tablekit.Builder` and returns a :class:`dlarepro.reports.latex.Table`.
Adding a table of the paper is one module here plus its published numbers in
``dlarepro/resources/paper/table<N>.csv``: the file lists, ``paper.tex``, the Snakemake outputs and
the DVC stage (whose outputs are the folders) follow the registry.
"""
