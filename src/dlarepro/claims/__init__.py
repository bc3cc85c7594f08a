"""A verdict on every quantitative claim of the DLA paper's prose (torch-free).

The claims live in ``resources/paper/claims.yaml`` (schema ``resources/schemas/claims.schema.yaml``):
each names its section, a verbatim quote, the number it states and what it compares in the
published tables (``resources/paper/table<N>.csv``) or in Figure 2's data. The rules that decide
each column are written once in :mod:`dlarepro.claims.rules` (``DECISION_RULES``, and
``VERDICT_RULES`` for a caption).

The interface the reports use::

    from dlarepro import claims

    measurements = claims.measurements_from_runs(runs_df, runs_dir=...)   # row key -> metric -> seeds
    df = claims.evaluate(measurements=measurements)    # one row per claim (claims.COLUMNS)
    claims.write_csv(df, "results/<profile>/claims.csv")                   # atomic
    section = claims.section_data(df)   # verdict table, failing published checks with arithmetic,
                                        # counts per verdict, the caption's rules
    claims.failing_published()          # the sentences the paper's own tables contradict

    claims.partners(table, rows_df)     # per row: the rows the paper compares it with (p columns)
    claims.STAR_RULE                    # the caption's star rule
    claims.attention_stats(blocks)      # Figure 2: per-image scores -> input std, row entropy
    claims.stats_from_file(npz_path)    # the same from a run's attention_stage3.npz

Command line: ``python -m dlarepro.claims --help``.
"""

from __future__ import annotations

from .attention import attention_stats, caption_text as figure2_caption, over_seeds, stats_from_file
from .comparisons import STAR_RULE, Partner, partner_edges, partners
from .verdicts import COLUMNS, VERDICTS, Failure, counts, evaluate, failing_published, section_data, write_csv
from .inputs import measurements_from_runs
from .rows import row_key
from .rules import DECISION_RULES, VERDICT_RULES
from .spec import ClaimsError, load
from .stats import holm, stars

__all__ = [
    "COLUMNS", "DECISION_RULES", "STAR_RULE", "VERDICTS", "VERDICT_RULES", "ClaimsError", "Failure", "Partner",
    "attention_stats", "counts", "evaluate", "failing_published", "figure2_caption", "holm", "load",
    "measurements_from_runs", "over_seeds", "partner_edges", "partners", "row_key", "section_data", "stars",
    "stats_from_file", "write_csv",
]
