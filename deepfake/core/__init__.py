"""The ground floor every layer stands on: project paths (``paths``), the typed-config machinery
that reads ``params.yaml`` (``config``), seeding, device choice, mixed precision and atomic writes
(``utils``), ending a process with its parent (``lifetime``) and progress lines (``progress``).

Imports nothing else of the package.
"""
