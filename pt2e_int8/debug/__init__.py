"""Find where accuracy goes, and choose per-layer precision for an accuracy target.

    numeric.py      per-layer error of a converted model against float: accumulated and local
    calibrated.py   one export and one calibration, converted under many per-layer plans
    plan.py         a per-layer precision plan: an Int8Quantizer configuration saved as JSON
    sensitivity.py  the model-level metric with one layer moved off static int8 at a time
    cost.py         the latency cost of each per-layer choice, from where the layer runs
    auto.py         auto_quantize: the fewest, cheapest layers off static int8 to meet a target
    metrics.py      ready-made metrics (cosine / SQNR of the outputs to the float model)

Core only: backends plug in through plain callables (`emulate`, placement dictionaries), so
this package imports neither `backends` nor `pt2e_int8.app`.
"""
