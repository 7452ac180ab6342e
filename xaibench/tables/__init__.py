"""Where scores become tables: statistics (stats), the paper's layouts (layouts), CSV/LaTeX/Markdown (formats).

Table 1 (SPEC §7): rows ResNet-18, ResNet-50, ViT, Segm, OFA; per dataset AUC and ACC x 100.
Table 2: rows methods; per dataset SRG and R-SRG x 100 (mean over test images; mean ± std over seeds), each cell
with its 95% bootstrap confidence interval over images ("16.78 [14.90, 18.61]", "16.78 ± 1.20 [15.02, 18.40]");
the LaTeX keeps the paper's "mean ± std" and says where the intervals are.
Side tables: plausibility AUROC, cost per image, the model's truth, gates and sanity
checks, paired Wilcoxon tests between methods (per seed and pooled over seeds), and `confidence_intervals`
(ci.csv) behind every cell. Imports run layouts -> stats, formats; stats and formats import neither.
"""
from xaibench.tables.formats import (
    BOLD,
    CI_CAPTION_NOTE,
    MISSING,
    flat_markdown,
    format_mean_std,
    markdown_table,
    to_latex,
    to_markdown,
    without_ci,
    write_table,
)
from xaibench.tables.layouts import (
    DATASET_LABELS,
    METHOD_LABELS,
    METRIC_LABELS,
    MODEL_LABELS,
    PLAUSIBILITY_CAPTION,
                                     TABLE2_METRICS,
    TRUTH_CAPTION,
    TRUTH_METRICS,
    Unavailable,
    cost_table,
    gate_warnings,
    gates_table,
    kendall_notes,
    method_table,
    plausibility_table,
    sanity_table,
                                     table1,
                                     table2,
    truth_table,
    unavailable_notes,
)
from xaibench.tables.stats import (
    ALL_SEEDS,
    CI_COLUMNS,
    CI_LEVEL,
    CI_RESAMPLES,
    CI_SEED,
    KENDALL_COLUMNS,
    WILCOXON_COLUMNS,
    bootstrap_means,
    ci_generator,
    confidence_intervals,
    kendall_taus,
    mean_curves,
    percentile_interval,
    pooled_intervals,
    seed_means,
    summary,
    wilcoxon_tests,
)

__all__ = [
    # stats
    "ALL_SEEDS", "CI_COLUMNS", "CI_LEVEL", "CI_RESAMPLES", "CI_SEED", "KENDALL_COLUMNS", "WILCOXON_COLUMNS",
    "bootstrap_means", "ci_generator", "confidence_intervals", "kendall_taus", "mean_curves", "percentile_interval",
    "pooled_intervals", "seed_means", "summary", "wilcoxon_tests",
    # formats
    "BOLD", "CI_CAPTION_NOTE", "MISSING", "flat_markdown", "format_mean_std", "markdown_table", "to_latex",
    "to_markdown", "without_ci", "write_table",
    # layouts
    "DATASET_LABELS", "METHOD_LABELS", "METRIC_LABELS", "MODEL_LABELS", "PLAUSIBILITY_CAPTION", "TABLE2_METRICS",
    "TRUTH_CAPTION", "TRUTH_METRICS", "Unavailable", "cost_table", "gate_warnings", "gates_table", "kendall_notes",
    "method_table", "plausibility_table", "sanity_table", "table1", "table2", "truth_table",
    "unavailable_notes",
]
