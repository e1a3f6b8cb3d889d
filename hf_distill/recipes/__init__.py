"""The recipe layer: everything ``recipes/*.py`` and the ``hf-distill`` command need on top of the core.

It may import the core and :mod:`hf_distill.modes`; nothing in those imports it back.
"""
