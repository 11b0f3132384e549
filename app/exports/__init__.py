"""Exports: profiles from `exports/*.yaml`, de-identification, and the analysis-ready bundle.

A profile (data, like the forms) says which instruments, which table layout and which
de-identification rules; `services` turns the study's records into one zip bundle (CSV,
labelled CSV, Stata, SPSS, Parquet, CDISC ODM, codebook, Frictionless datapackage,
manifest), streaming the records in batches so memory does not grow with the study.
"""
