"""What a run leaves to read: the report (``report``) over a run folder (``run_folder``) checked against its
schema (``schema``), formatted tables (``format``), figures (``plots``, and the quality figure with the
verdict, ``metric_figure``), multi-seed scorecards with paired intervals (``scorecard``), one seed's view of a
multi-seed report (``seed_report``) and side-by-side latency (``timing``)."""

from hf_distill.reports.report import load_report, make_report

__all__ = ["load_report", "make_report"]
