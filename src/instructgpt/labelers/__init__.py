"""Labelers: where demonstrations, rankings, Likert ratings and pairwise choices come from.

Every labeler implements one interface (``base.Labeler``): ``rank`` K responses (ties, 1-7
ratings, Table 3 flags), ``compare`` two responses blind, ``demonstrate`` a response. Three
kinds exist: people, through the records the labeling application exports (``human``); an
LLM behind any OpenAI-compatible chat endpoint (``llm``); and a simulated panel that scores
measurable qualities with per-labeler weights and noise (``simulated``, ``panel``), which
makes the pipeline runnable offline. ``agreement`` measures inter-labeler agreement and
screens labelers against reference labels. See docs/labelers.md.

Nothing is imported here: import the submodule you need.
"""
