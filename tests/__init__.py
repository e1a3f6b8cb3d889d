"""The test suite, in folders that mirror ``hf_distill``'s subpackages.

Every folder is a package (an ``__init__.py``), so two test modules may share a basename in different folders
(``cache/test_build.py`` and ``students/test_build.py``) under pytest's default import mode, and shared helpers
import one way everywhere, ``from tests.helpers.<module> import ...``, from the repository root that pytest puts
on ``sys.path``. Test modules never import each other: what two of them need lives in ``tests/helpers/``.
"""
