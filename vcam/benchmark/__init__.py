"""`vcam bench`: honest timings through public APIs only (nanoGPT's bench.py in spirit).

- `timing`: warm up, synchronise, time many calls, p50/p95 (the percentiles are `vcam.metrics`').
- `network`: the network alone, per backend × precision × model × size (`engine.backends.create_backend`).
- `app`: the whole pipeline from a video file, with and without harmonization (`vcam.pipeline.Pipeline`
  and its hooks: a `Metrics` passed in, `on_frame`, `stop()`).
- `report`: the machine, JSON (the record), a Markdown table, a PNG plot.

FLOP counts and hardware peaks are not measured here: they are estimates, not timings.
"""
