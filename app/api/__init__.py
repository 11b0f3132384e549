"""The REDCap-compatible API: one form-encoded endpoint, `POST /api/`, answering as REDCap does.

`views` (the endpoint, its help page and OpenAPI description) -> `handlers` (one per
`content`) -> `export` / `imports` / `deletion`, which read through the scoped record
repository and write only through the write path. `params` and `render` hold what every
client needs exactly right: list and boolean parameters in all their spellings, and
answers and errors in REDCap's shapes. `tokens` issues and checks API tokens.
"""
