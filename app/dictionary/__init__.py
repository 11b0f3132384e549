"""The study definition as a REDCap data dictionary, and back.

`rows` writes the definition as dictionary rows (shared with the API's metadata);
`importer` reads a REDCap dictionary into `forms/` files, reporting what Casebook does
not model. The command line (`flask dictionary ...`) and the admin page use both.
"""
