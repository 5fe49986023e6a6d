"""The toy world: a synthetic corpus with known facts, and probes of what a trained model stored.

- ``world``: the generator (people, biographies, QA pairs, arithmetic) and its downstream tasks,
  prepared as ``source="toyworld"`` by ``studies.data``.
- ``probe``: in-biography probes of which facts a model has stored, and in which direction;
  ``python -m studies.toyworld.probe --checkpoint CKPT``.
"""
