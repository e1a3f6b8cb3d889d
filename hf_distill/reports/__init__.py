"""What a run leaves to read: the report (``report``) over a run folder (``run_folder``) checked against its
schema (``schema``), formatted tables (``format``), figures (``plots``), multi-seed scorecards with paired
intervals (``scorecard``) and side-by-side latency (``timing``)."""

from hf_distill.reports.report import load_report, make_report

__all__ = ["load_report", "make_report"]
