"""The application: the `pt2e-int8` command, its reports, timing, device probe and demo data.

Depends on the core (`pt2e_int8`) and on `backends`; neither imports anything from here.
"""
