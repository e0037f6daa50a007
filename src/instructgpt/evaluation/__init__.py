"""The evaluation suite (method.md "Baselines and evaluation"): win rates against the SFT
baseline by a chosen judge, TruthfulQA, RealToxicityPrompts, CrowS-Pairs / Winogender and the
alignment tax on public NLP tasks, and the HTML report.

Modules: ``metrics`` (pure maths), ``scoring`` (log-probs, greedy completions), ``judges``,
``truthfulqa``, ``toxicity``, ``bias``, ``nlp``, ``suite`` (:func:`run_eval`), ``report``.
Nothing heavy is imported here.
"""
