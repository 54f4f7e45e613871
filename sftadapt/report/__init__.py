"""Reports: markdown tables of a stage or run (markdown), the study report (study), the self-contained HTML report
(html, svgplot, assets/)."""
