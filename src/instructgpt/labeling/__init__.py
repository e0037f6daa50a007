"""The human data collection application (paper section 3.4, appendix B).

Labelers write demonstrations, rank K outputs on a ranking board (ties allowed) while rating
each one 1-7 with the Table 3 yes/no questions, and compare two outputs blind for win rates.
Admins import prompts, attach or generate outputs, set the overlap and invite labelers; the
answers export to the training formats of ``instructgpt.data.schemas``.

Layout: ``models`` (tables), ``db`` (engines, migrations), ``store`` (every read and write,
one transaction each), ``answers`` (form fields -> checked records), ``export``, ``security``
(passwords, CSRF, size limits), ``app`` and ``admin`` (the web pages).
"""
