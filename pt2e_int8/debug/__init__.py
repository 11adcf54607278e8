"""Find where accuracy goes, and choose per-layer precision for an accuracy target.

    anchors.py      where a layer's output is read, and which module path a choice targets
    numeric.py      per-layer error of a converted model against float: accumulated and local
    artifact.py     per-layer outputs of an artifact against the reference; the first divergence
    calibrated.py   one export and one calibration, converted under many per-layer plans
    plan.py         a per-layer precision plan: an Int8Quantizer configuration saved as JSON
    sensitivity.py  the model-level metric with one layer moved off (or kept on) static int8
    cost.py         the latency cost of each per-layer choice, from where the layer runs
    fast_eval.py    a bit-identical, faster-to-run copy of a converted model, for searching
    auto.py         auto_quantize: the fewest, cheapest layers off static int8 to meet a target
    metrics.py      ready-made metrics (cosine / SQNR of the outputs to the float model)

Core only: backends plug in through plain callables (`emulate`, `reference`, placement
dictionaries), so this package imports neither `backends` nor `pt2e_int8.app`.
"""
